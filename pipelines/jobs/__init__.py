"""One module per ``voxflow`` job (probe, diarize, clean, enhance, separate, vad, transcribe): its
run config, its stages and what it does with their rows. A job imports the engine and
``audio_ops``, never another job."""
