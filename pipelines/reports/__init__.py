"""What reads a finished run: diarization scoring (``voxflow eval``), the HTML report and
``voxflow inspect``."""
