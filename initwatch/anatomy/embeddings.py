"""Finding the embeddings of a stack that sits inside a user's model (an ``nn.Embedding``
next to an ``nn.TransformerEncoder``), where no family map says where they are."""

from __future__ import annotations

import re

from torch import nn

from initwatch.anatomy.model import Anatomy

_POSITION = re.compile(r"pos", re.IGNORECASE)
_OTHER = re.compile(r"type|segment|speaker|lang", re.IGNORECASE)
_ENCODER = re.compile(r"src|source|enc", re.IGNORECASE)
_DECODER = re.compile(r"tgt|target|dec", re.IGNORECASE)


def _inside(name: str, paths: list[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in paths)


def find_embeddings(model: nn.Module, anatomy: Anatomy) -> None:
    """Fill in the token (and position) embedding of stacks that have none, by structure.

    Candidates are the ``nn.Embedding`` modules outside every block list whose width is the
    model's width ``d`` and that no stack uses yet. A name containing ``pos`` is a position
    table; ``type``/``segment``/``speaker``/``lang`` tables are neither. One token candidate
    goes to the stack (both stacks of an encoder-decoder share it); two go to the encoder and
    decoder when their names say which (``src``/``enc`` and ``tgt``/``dec``). Anything else is
    ambiguous and left alone: the schemes then report what they could not apply.

    Example::

        >>> import initwatch
        >>> class Model(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.tok = nn.Embedding(100, 16)
        ...         self.pos = nn.Embedding(32, 16)
        ...         layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
        ...         self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        >>> stack = initwatch.inspect(Model()).stacks[0]
        >>> stack.token_embedding, stack.position_embedding
        ('tok', 'pos')
    """
    missing = [s for s in anatomy.stacks if s.token_embedding is None]
    if not missing:
        return
    lists = [s.path for s in anatomy.stacks] + [b.path for s in anatomy.stacks for b in s.blocks]
    used = {p for s in anatomy.stacks for p in (s.token_embedding, s.position_embedding) if p}
    tables = [
        name
        for name, mod in model.named_modules()
        if isinstance(mod, nn.Embedding)
        and name not in used
        and not _inside(name, lists)
        and (not anatomy.hidden or mod.embedding_dim == anatomy.hidden)
    ]
    positions = [n for n in tables if _POSITION.search(n.rsplit(".", 1)[-1])]
    tokens = [n for n in tables if n not in positions and not _OTHER.search(n.rsplit(".", 1)[-1])]
    if len(tokens) == 1:
        chosen = {s.kind: tokens[0] for s in missing}
    elif len(tokens) == 2 and len(missing) == 2:
        enc = [n for n in tokens if _ENCODER.search(n) and not _DECODER.search(n)]
        dec = [n for n in tokens if _DECODER.search(n) and not _ENCODER.search(n)]
        if len(enc) != 1 or len(dec) != 1:
            return
        chosen = {"encoder": enc[0], "decoder": dec[0]}
    else:
        return
    for stack in missing:
        stack.token_embedding = chosen[stack.kind]
        if stack.position_embedding is None and len(positions) == 1 and len(missing) == 1:
            stack.position_embedding = positions[0]
