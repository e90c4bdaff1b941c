"""Video over detection: reading and writing video, sources, the built-in video, trackers,
line and zone counting, MOT metrics and the ``odpipe track`` command. Uses ``detect``."""
