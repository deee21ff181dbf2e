"""Model families: pre-processing and decoding around an engine, one module per family
(BlazeFace, RetinaFace, SSD, FER, ImageNet), and the helpers they share (boxes, crops, alignment).
"""
