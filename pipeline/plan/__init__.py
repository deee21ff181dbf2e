"""What a run will use, decided before it starts: each role's engine and model (``placement``), whether an
Edge TPU answers with the role's own model (``edgetpu_check``), the model files it needs and where they come
from (``model_files``), and the camera ``--source auto`` finds (``source_auto``)."""
