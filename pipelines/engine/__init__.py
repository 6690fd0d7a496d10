"""What every job shares: the run configuration and its hash, listing the corpus, resume
(shards, commit markers, lost inputs), table sinks, the Ray stage adapter and runtime, the
per-file job skeleton, the shared scan stage and the run summary."""
