"""Production: ONNX export, the scoring service and its request log, and monitoring (drift,
cohort stability, service health)."""
