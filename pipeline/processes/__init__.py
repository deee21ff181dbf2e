"""Process groups: which actors run in which process, spawning and watching them, and the group
process itself (the control link between them is ``bus/control.py``)."""
