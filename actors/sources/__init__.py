"""Frame sources for the capture actor: images, video files, cameras, streams, the synthetic
source and the demo clip, chosen by a source string.
"""
