"""Process groups: which actors run in which process, spawning and watching them, the
control link, and the group process itself.
"""
