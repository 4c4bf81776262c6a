"""The data sample that flows from dataset to metric."""
from mmengine.structures import BaseDataElement


class VLMDataSample(BaseDataElement):
    """One image-text sample, from the dataset adapter to the metric.

    Core fields (set by datasets, read by the model):
        conversation (list[dict]): LLaVA-style turns ``{'from': 'human'|'gpt', 'value': str}``.
            ``<image>`` marks where the image tokens go. In training the gpt turns are the
            targets; in prediction a trailing gpt turn is dropped (or, in forced routing, kept
            as the given answer). Routing tokens in gpt turns (``[DET]``) are written without
            their ``[EMB]`` run: the model inserts the run of the owning decoder's length.
        task (str): task family; batches are homogeneous in it, metrics select by it.

    Core fields set by the model in prediction:
        pred_text (str): the reply, routing tokens included, ``[EMB]`` runs excluded.
        pred_phrases (list[str]): per super-link phrase, the text before its routing token.

    Metainfo: ``sample_id``, ``img_path``, ``ann_file``, and what adapters add. Plugins add
    their own fields (targets and predictions); each decoder's docstring lists them.
    """
