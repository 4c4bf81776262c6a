from .data_sample import VLMDataSample
from .linked_phrases import LinkedPhrases

__all__ = ['VLMDataSample', 'LinkedPhrases']
