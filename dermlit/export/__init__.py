"""From a trained run to a deployable file: the model with its preprocessing and calibration
(``deployable``), written as ONNX with the run's decision metadata (``onnx``)."""
