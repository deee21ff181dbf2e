"""Where results go: the display (window, video file, the web live view), the recorder that
counts every frame, and MQTT.
"""
