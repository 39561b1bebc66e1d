"""medtfod: the TensorFlow Object Detection API workflow for medical images."""
__version__ = "0.1.0"
