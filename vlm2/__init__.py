"""vlm2: VisionLLM v2 as an MMEngine-style toolkit."""
__version__ = '0.1.0'
