"""A Shardwise model description as the equivalent tree of torch.nn modules.

    from shardwise_torch import build
    model = build("conv(8, 3, pad: 1) residual(conv(8, 3, pad: 1) groupnorm(2) relu) flatten linear(10)", [1, 28, 28])
    model.load_state_dict(safetensors.torch.load_file("run/model.safetensors"))

The module's parameter names are the checkpoint's: the k-th top-level layer with parameters is
`layers.<k>`; inside a residual block `body.<i>` and `shortcut.<i>` (torch.nn.Sequential's
indices), inside parallel branches `branches.<i>.<j>`. Layers without parameters at the top
level (activations, pooling, flatten, dropout) are applied in place without being registered,
as Shardwise names them. Dropout layers are torch's, active in train() and the identity in eval().
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

COMPOSITES = {"residual", "parallel"}


def items(text):
    """Splits layer-language text into (name, inner text) pairs; inner is between the parentheses."""
    result, i = [], 0
    while i < len(text):
        c = text[i]
        if c in " ,\n\t\r;":
            i += 1
            continue
        if c == "#":
            while i < len(text) and text[i] != "\n":
                i += 1
            continue
        start = i
        while i < len(text) and (text[i].isalnum() or text[i] == "_"):
            i += 1
        name = text[start:i].lower()
        if not name:
            raise ValueError(f"unexpected {text[i]!r} at character {i + 1}")
        inner = ""
        if i < len(text) and text[i] == "(":
            depth, j = 0, i
            while True:
                depth += {"(": 1, ")": -1}.get(text[j], 0)
                if depth == 0:
                    break
                j += 1
            inner, i = text[i + 1:j], j + 1
        result.append((name, inner))
    return result


def split_top(text, separator):
    parts, current, depth = [], "", 0
    for c in text:
        depth += {"(": 1, ")": -1}.get(c, 0)
        if c == separator and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += c
    return parts + [current]


def arguments(inner):
    """Positional and named arguments of a leaf layer: `32, 5, pad: 2` or `pad=2`."""
    positional, named = [], {}
    for part in [p.strip() for p in inner.split(",") if p.strip()]:
        for mark in (":", "="):
            if mark in part:
                key, value = part.split(mark, 1)
                named[key.strip().lower()] = value.strip().strip("'\"")
                break
        else:
            positional.append(part)
    return positional, named


def sections(inner):
    """A composite's text: the layers before the first top-level `key:`, then each key's text."""
    keys, depth, i = [], 0, 0
    while i < len(inner):
        c = inner[i]
        depth += {"(": 1, ")": -1}.get(c, 0)
        if depth == 0 and c.isalpha() and (i == 0 or not (inner[i - 1].isalnum() or inner[i - 1] == "_")):
            j = i
            while j < len(inner) and (inner[j].isalnum() or inner[j] == "_"):
                j += 1
            k = j
            while k < len(inner) and inner[k] == " ":
                k += 1
            if k < len(inner) and inner[k] in ":=":
                keys.append((inner[i:j].lower(), i, k + 1))
            i = j
            continue
        i += 1
    named = {key: inner[value:(keys[n + 1][1] if n + 1 < len(keys) else len(inner))] for n, (key, _, value) in enumerate(keys)}
    return inner[:keys[0][1] if keys else len(inner)], named


class Residual(nn.Module):
    def __init__(self, body, shortcut=None):
        super().__init__()
        self.body = body
        self.shortcut = shortcut

    def forward(self, x):
        return self.body(x) + (self.shortcut(x) if self.shortcut is not None else x)


class Parallel(nn.Module):
    def __init__(self, branches, combine):
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.combine = combine

    def forward(self, x):
        outputs = [branch(x) for branch in self.branches]
        return torch.cat(outputs, dim=1) if self.combine == "concat" else sum(outputs[1:], outputs[0])


class CategoryEmbedding(nn.Module):
    """Shardwise's embedding: the row's first value is a category; its vector follows the other values."""

    def __init__(self, count, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(count, dim))

    def forward(self, x):
        return torch.cat([x[:, 1:], F.embedding(x[:, 0].long(), self.weight)], dim=1)


class TokenEmbedding(nn.Module):
    """Shardwise's tokens(V, C): each id's vector plus its position's (GPT's wte + wpe)."""

    def __init__(self, vocabulary, dim, context):
        super().__init__()
        self.token = nn.Embedding(vocabulary, dim)
        self.position = nn.Embedding(context, dim)

    def forward(self, x):
        ids = x.long()
        return self.token(ids) + self.position(torch.arange(ids.shape[1], device=ids.device))


class CausalSelfAttention(nn.Module):
    """Shardwise's attention(H, dropout: p): nanoGPT's layer, qkv then proj."""

    def __init__(self, width, heads, dropout=0.0):
        super().__init__()
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.heads, self.dropout = heads, dropout

    def forward(self, x):
        n, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (z.view(n, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(n, t, c))


def shape_after(module, shape):
    with torch.no_grad():
        return list(module.eval()(torch.zeros([2] + shape)).shape[1:])


# The tokens layers built so far: a linear(V, tied: tokens) takes the last one's table.
TOKENS = []


def leaf(name, inner, shape):
    p, k = arguments(inner)
    number = lambda v: float(v)
    if name in ("conv", "conv2d"):
        return nn.Conv2d(shape[0], int(p[0] if p else k["out_channels"]), int(p[1] if len(p) > 1 else k["kernel"]),
                         stride=int(k.get("stride", 1)), padding=int(k.get("pad", k.get("padding", 0))), dilation=int(k.get("dilation", 1)))
    if name in ("maxpool", "maxpool2d", "avgpool", "avgpool2d"):
        kernel = int(p[0] if p else k["kernel"])
        stride, pad = int(k.get("stride", kernel)), int(k.get("pad", k.get("padding", 0)))
        return nn.MaxPool2d(kernel, stride, pad) if name.startswith("max") else nn.AvgPool2d(kernel, stride, pad, count_include_pad=True)
    if name == "flatten":
        return nn.Flatten()
    if name in ("linear", "dense"):
        linear = nn.Linear(shape[-1], int(p[0] if p else k["out_features"]))
        if k.get("tied", "").lower() == "tokens":  # lm_head.weight = wte.weight: one tensor, both uses' gradients summed
            linear.weight = TOKENS[-1].token.weight
        return linear
    if name in ("tokens", "token_embedding"):
        TOKENS.append(TokenEmbedding(int(p[0] if p else k["vocabulary"]), int(p[1] if len(p) > 1 else k["dim"]), shape[0]))
        return TOKENS[-1]
    if name in ("attention", "causal_self_attention"):
        return CausalSelfAttention(shape[1], int(p[0] if p else k["heads"]), number(k.get("dropout", 0)))
    if name == "embedding":
        return CategoryEmbedding(int(p[0] if p else k["count"]), int(p[1] if len(p) > 1 else k["dim"]))
    if name == "relu":
        return nn.ReLU()
    if name == "tanh":
        return nn.Tanh()
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "gelu":
        return nn.GELU(approximate=k.get("approximate", "none"))
    if name in ("leaky_relu", "leakyrelu"):
        return nn.LeakyReLU(number(p[0] if p else k.get("slope", 0.01)))
    if name in ("layernorm", "layer_norm"):
        return nn.LayerNorm(shape[-int(k.get("dims", len(shape))):], eps=number(k.get("eps", 1e-5)))
    if name in ("rmsnorm", "rms_norm"):
        return nn.RMSNorm(shape[-int(k.get("dims", len(shape))):], eps=number(k["eps"]) if "eps" in k else None)
    if name in ("groupnorm", "group_norm"):
        return nn.GroupNorm(int(p[0] if p else k["groups"]), shape[0], eps=number(k.get("eps", 1e-5)))
    if name in ("batchnorm", "batchnorm1d", "batchnorm2d", "batch_norm"):
        if k.get("stats", "batch") != "batch":
            raise ValueError("batchnorm(stats: shard) normalizes each shard by itself: torch has no such module")
        kind = nn.BatchNorm1d if len(shape) == 1 else nn.BatchNorm2d
        return kind(shape[0], eps=number(k.get("eps", 1e-5)), momentum=number(k.get("momentum", 0.1)))
    if name == "dropout":
        return nn.Dropout(number(p[0] if p else k["p"]))
    if name == "dropout2d":
        return nn.Dropout2d(number(p[0] if p else k["p"]))
    if name == "gaussian_dropout":
        return nn.Identity()  # Shardwise's Gaussian dropout is the identity at inference
    raise ValueError(f"unknown layer {name!r}")


def sequence(text, shape):
    """nn.Sequential of the layers in `text` (indices over all of them, as torch names them) and the output shape."""
    modules = []
    for name, inner in items(text):
        module = layer(name, inner, shape)
        shape = shape_after(module, shape)
        modules.append(module)
    return nn.Sequential(*modules), shape


def layer(name, inner, shape):
    if name not in COMPOSITES:
        return leaf(name, inner, shape)
    body, named = sections(inner)
    if name == "residual":
        shortcut = sequence(named["shortcut"], shape)[0] if "shortcut" in named else None
        return Residual(sequence(body, shape)[0], shortcut)
    combine = {"concat": "concat", "concatenate": "concat", "add": "add", "sum": "add"}[named.get("combine", "concat").strip().lower()]
    return Parallel([sequence(branch, shape)[0] for branch in split_top(body, "|")], combine)


class Model(nn.Module):
    """The top level: layers with parameters registered as `layers.<k>`, the others applied in place."""

    def __init__(self, steps):
        super().__init__()
        self.steps = steps
        self.layers = nn.ModuleList([m for m in steps if any(True for _ in m.parameters())])

    def forward(self, x):
        for step in self.steps:
            x = step(x)
        return x.flatten(1)

    def train(self, mode=True):
        super().train(mode)
        for step in self.steps:
            step.train(mode)
        return self


def model_file(path):
    """(layers, input shape) of a Shardwise model file (YAML with `input` and `layers`)."""
    import yaml
    description = yaml.safe_load(open(path))
    layers = description["layers"]
    return (" ".join(layers) if isinstance(layers, list) else layers), list(description["input"])


def load(model, tensors):
    """Loads a checkpoint's tensors by name (strict): Shardwise keeps `num_batches_tracked` as a
    one-element float tensor, torch as a 0-d integer one."""
    state = {n: (t.reshape([]).long() if n.endswith("num_batches_tracked") else t) for n, t in tensors.items()}
    # A tied tensor (linear(V, tied: tokens)) is saved once, under its owner's name.
    params = dict(model.named_parameters(remove_duplicate=False))
    for n, p in params.items():
        owner = next((m for m, q in params.items() if q is p and m in state), None)
        if n not in state and owner is not None:
            state[n] = state[owner]
    model.load_state_dict(state, strict=True)
    return model


def build(text, input_shape):
    """The torch.nn module of a Shardwise description for samples of `input_shape` (e.g. [1, 28, 28])."""
    steps, shape = [], list(input_shape)
    TOKENS.clear()
    for name, inner in items(text):
        module = layer(name, inner, shape)
        shape = shape_after(module, shape)
        steps.append(module)
    return Model(steps)
