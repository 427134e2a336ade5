"""Fill-in-the-middle prompts: the text around a cursor written in the loaded model's own FIM
tokens, found in its vocabulary; no chat template is involved."""

from __future__ import annotations

from mlxserve.families.fim import ALL_MARKERS, FORMATS, fim_format
from mlxserve.models.loaded import LoadedModel
from mlxserve.pipeline.errors import RequestError
from mlxserve.pipeline.request import FillInMiddle


async def fim_prompt(loaded: LoadedModel, fill: FillInMiddle) -> tuple[str, tuple[str, ...]]:
    """The raw prompt, and the tokens besides end-of-text that end the model's middle (stop
    markers); a 400 naming the model and `fill.param` when its vocabulary has no FIM tokens."""
    single = set((await loaded.engine.special_ids(ALL_MARKERS)).values())
    form = fim_format(single)
    if form is None:
        families = "; ".join(f.name for f in FORMATS)
        raise RequestError(
            400,
            f"model '{loaded.identifier}' has no fill-in-the-middle tokens, so `{fill.param}` "
            f"cannot be used with it; load a code model that has them ({families})",
            fill.param,
            "suffix_not_supported",
        )
    ends = tuple(marker for marker in form.ends if marker in single)
    return form.render(fill.prefix, fill.suffix, fill.middle), ends
