"""The residual add before a pre-norm block's second norm, inside the norm's kernel (inference).

Pre-norm decoder layers (Llama, Mistral, Qwen2, GPT-2, ...) end their attention half with

    hidden_states = residual + hidden_states        # one elementwise kernel
    residual = hidden_states
    hidden_states = self.post_attention_layernorm(hidden_states)

The add is a kernel of its own: a read of two activations and a write of one, and a launch.
tritonic's norm kernels take a residual and return both the normalised sum and the sum
(``ops.rms_norm(a, w, residual=b) -> (y, a + b)``, the sum rounded as PyTorch's add rounds
it), so those three statements are one kernel.

The layer's ``forward`` is the model's own code: tritonic does not copy it. :func:`fuse_residual_norms`
reads the source of each layer class's ``forward`` (through a ``deprecate_kwarg`` style
decorator to the function it wraps), and looks for exactly that sequence among the
function's top-level statements: an assignment ``X = A + B`` of two names, then ``R = X``,
then ``X = self.<norm>(X)`` where ``<norm>`` is a module tritonic swapped in (it has an
``add_norm`` method). One ``if`` without ``else`` may stand between the add and the rest,
as GPT-2's optional cross-attention does; the rewrite then keeps the original statements
in that branch and fuses only where the branch is not taken. The three statements become
``X, R = self.<norm>.add_norm(A, B)``; nothing else changes. The new function is compiled
from that tree with the original's file name, line numbers, globals and defaults, wrapped
again in the decorator's copy, and bound to each layer instance (``module.forward``).

Classes whose forward has no such sequence, uses ``super()`` or closure variables, or has no
readable source are left alone (the report says why for the ones that had a swapped norm).
``add_norm`` itself hands anything its kernel does not take (mixed dtypes, shapes that
differ) to the plain add and the module's own call.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
import types

import torch

__all__ = ["fuse_residual_norms"]


def _inner(fn):
    """The function a decorator chain wraps (``fn`` itself when undecorated), found through
    ``__wrapped__`` (``functools.wraps``), and the path of closure-cell indices from ``fn`` to it;
    (None, None) when a wrapper does not keep the function it wraps in its closure."""
    path = []
    for _ in range(8):
        if not isinstance(fn, types.FunctionType):
            return None, None
        inner = fn.__dict__.get("__wrapped__")
        if inner is None:
            return fn, path
        index = next((i for i, c in enumerate(fn.__closure__ or ()) if _content(c) is inner), None)
        if index is None:
            return None, None
        path.append(index)
        fn = inner
    return None, None


def _content(cell):
    try:
        return cell.cell_contents
    except ValueError:  # an empty cell
        return None


def _rewrap(outer, path, new_inner):
    """``outer`` with the function at ``path`` (closure indices) replaced by ``new_inner``."""
    if not path:
        return new_inner
    cells = list(outer.__closure__)
    i = path[0]
    cells[i] = types.CellType(_rewrap(cells[i].cell_contents, path[1:], new_inner))
    new = types.FunctionType(outer.__code__, outer.__globals__, outer.__name__, outer.__defaults__, tuple(cells))
    new.__kwdefaults__ = outer.__kwdefaults__
    new.__dict__.update(outer.__dict__)
    if "__wrapped__" in new.__dict__:
        new.__wrapped__ = cells[i].cell_contents
    return new


def _name(node):
    return node.id if isinstance(node, ast.Name) else None


def _match(body, i, fusable):
    """(x, a, b, r, norm attribute, index of an `if` between or None, last index) for the
    pattern starting at body[i], else None."""
    s1 = body[i]
    if not (isinstance(s1, ast.Assign) and len(s1.targets) == 1 and _name(s1.targets[0])
            and isinstance(s1.value, ast.BinOp) and isinstance(s1.value.op, ast.Add)
            and _name(s1.value.left) and _name(s1.value.right)):
        return None
    x, a, b = _name(s1.targets[0]), _name(s1.value.left), _name(s1.value.right)
    j, between = i + 1, None
    if j < len(body) and isinstance(body[j], ast.If) and not body[j].orelse:
        between, j = j, j + 1
    if j + 1 >= len(body):
        return None
    s2, s3 = body[j], body[j + 1]
    if not (isinstance(s2, ast.Assign) and len(s2.targets) == 1 and _name(s2.targets[0]) and _name(s2.value) == x):
        return None
    r = _name(s2.targets[0])
    call = s3.value if isinstance(s3, ast.Assign) else None
    if not (isinstance(s3, ast.Assign) and len(s3.targets) == 1 and _name(s3.targets[0]) == x
            and isinstance(call, ast.Call) and len(call.args) == 1 and not call.keywords and _name(call.args[0]) == x
            and isinstance(call.func, ast.Attribute) and _name(call.func.value) == "self"
            and call.func.attr in fusable and r != x):
        return None
    if between is not None and x in {n.id for n in ast.walk(body[between].test) if isinstance(n, ast.Name)}:
        return None  # the branch's condition reads the sum: it must see it before the norm
    return x, a, b, r, call.func.attr, between, j + 1


def _fused(x, a, b, r, attr, like):
    """``x, r = self.<attr>.add_norm(a, b)`` with ``like``'s line numbers."""
    load = ast.Load()
    call = ast.Call(func=ast.Attribute(value=ast.Attribute(value=ast.Name("self", load), attr=attr, ctx=load),
                                       attr="add_norm", ctx=load),
                    args=[ast.Name(a, load), ast.Name(b, load)], keywords=[])
    node = ast.Assign(targets=[ast.Tuple([ast.Name(x, ast.Store()), ast.Name(r, ast.Store())], ast.Store())],
                      value=call)
    return ast.copy_location(node, like)


def _rewrite(fn, fusable):
    """A copy of the undecorated ``fn`` with every matched sequence fused, and the norms it
    fuses; or (None, why)."""
    if fn.__code__.co_freevars:
        return None, "its forward reads closure variables"
    if "super" in fn.__code__.co_names:
        return None, "its forward calls super()"
    try:
        lines, first_line = inspect.getsourcelines(fn)
        filename = inspect.getsourcefile(fn) or "<tritonic>"
    except (OSError, TypeError):
        return None, "no source for its forward"
    tree = ast.parse(textwrap.dedent("".join(lines)))
    func = tree.body[0] if tree.body else None
    if not isinstance(func, ast.FunctionDef):
        return None, "its forward's source is not one function"
    func.decorator_list = []  # the original decorators wrap the result again (_rewrap)
    func.returns = None  # annotations are not evaluated again (names a module may import
    for arg in ast.walk(func.args):  # only for type checkers)
        if isinstance(arg, ast.arg):
            arg.annotation = None
    body, out, fused, i = func.body, [], [], 0
    while i < len(body):
        m = _match(body, i, fusable)
        if m is None:
            out.append(body[i])
            i += 1
            continue
        x, a, b, r, attr, between, last = m
        node = _fused(x, a, b, r, attr, body[last])
        if between is None:
            out.append(node)
        else:  # taken: the original statements; not taken: the fused norm
            branch = body[between]
            taken = [body[i], *branch.body, *body[between + 1:last + 1]]
            out.append(ast.copy_location(ast.If(test=branch.test, body=taken, orelse=[node]), branch))
        fused.append(attr)
        i = last + 1
    if not fused:
        return None, "no `X = A + B; R = X; X = self.norm(X)` in its forward"
    first = _first_norm(out, fusable)
    if first is not None and len(out) >= 2:
        tail = _tail_add(out[-2], out[-1])
        if tail is not None:  # `X = A + B; return X` -> the next layer's first norm computed here too
            load = ast.Load()
            call = ast.Call(func=ast.Attribute(value=ast.Name("self", load), attr="_tritonic_add_ahead", ctx=load),
                            args=[ast.Name(tail[0], load), ast.Name(tail[1], load)], keywords=[])
            out[-2:] = [ast.copy_location(ast.Return(value=call), out[-1])]
        else:
            first = None
    func.body = out
    ast.fix_missing_locations(tree)
    ast.increment_lineno(tree, first_line - 1)
    namespace: dict = {}
    exec(compile(tree, filename, "exec"), fn.__globals__, namespace)  # noqa: S102 (the model's own code)
    new = namespace[func.name]
    new.__kwdefaults__ = fn.__kwdefaults__
    new.__defaults__ = fn.__defaults__
    new.__dict__.update(fn.__dict__)
    new.__qualname__ = fn.__qualname__
    new._tritonic_add_norm = tuple(fused)
    new._tritonic_first_norm = first  # set: the forward ends in self._tritonic_add_ahead(A, B)
    return new, fused


def _first_norm(body, fusable):
    """N when the function starts (after a docstring) with ``R = X; X = self.N(X)``."""
    start = 1 if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) else 0
    if len(body) < start + 2:
        return None
    s1, s2 = body[start], body[start + 1]
    if not (isinstance(s1, ast.Assign) and len(s1.targets) == 1 and _name(s1.targets[0]) and _name(s1.value)):
        return None
    x = _name(s1.value)
    call = s2.value if isinstance(s2, ast.Assign) else None
    if (isinstance(s2, ast.Assign) and len(s2.targets) == 1 and _name(s2.targets[0]) == x
            and isinstance(call, ast.Call) and len(call.args) == 1 and not call.keywords and _name(call.args[0]) == x
            and isinstance(call.func, ast.Attribute) and _name(call.func.value) == "self" and call.func.attr in fusable):
        return call.func.attr
    return None


def _tail_add(s1, s2):
    """(A, B) when the function ends with ``X = A + B; return X``."""
    if (isinstance(s1, ast.Assign) and len(s1.targets) == 1 and _name(s1.targets[0])
            and isinstance(s1.value, ast.BinOp) and isinstance(s1.value.op, ast.Add)
            and _name(s1.value.left) and _name(s1.value.right)
            and isinstance(s2, ast.Return) and _name(s2.value) == _name(s1.targets[0])):
        return _name(s1.value.left), _name(s1.value.right)
    return None


def _plain_add(a, b):
    return a + b


def _chain(model: torch.nn.Module) -> int:
    """In every ModuleList / Sequential of rewritten layers, layer i's closing add goes to
    layer i+1's first norm (``add_norm_ahead``: the sum and its norm in one kernel, the norm
    kept for that layer's first call); the last layer adds plainly. Returns the links made."""
    links = 0
    for m in model.modules():
        if getattr(getattr(m.__dict__.get("forward"), "__func__", None), "_tritonic_first_norm", None):
            m.__dict__["_tritonic_add_ahead"] = _plain_add
    for seq in model.modules():
        if not isinstance(seq, (torch.nn.ModuleList, torch.nn.Sequential)):
            continue
        layers = list(seq)
        for cur, nxt in zip(layers, layers[1:]):
            first = getattr(getattr(nxt.__dict__.get("forward"), "__func__", None), "_tritonic_first_norm", None)
            if "_tritonic_add_ahead" in cur.__dict__ and first is not None:
                cur.__dict__["_tritonic_add_ahead"] = getattr(nxt, first).add_norm_ahead
                links += 1
    return links


def fuse_residual_norms(model: torch.nn.Module) -> tuple[list[str], list[str]]:
    """Bind a fused ``forward`` to every layer of ``model`` whose class's forward has the
    add-then-norm sequence over a norm with ``add_norm``; (replaced, kept) report lines."""
    done: dict[type, object] = {}
    count: dict[str, tuple[int, tuple]] = {}
    kept = []
    for name, module in model.named_modules():
        cls = type(module)
        fusable = {n for n, c in module.named_children() if callable(getattr(c, "add_norm", None))}
        if not fusable or "forward" in module.__dict__:  # (an accelerate hook, a second optimize)
            continue
        key = (cls, frozenset(fusable))
        if key not in done:
            inner, path = _inner(cls.forward)
            if inner is None:
                done[key] = "its forward is wrapped in a way tritonic does not follow"
            else:
                new, info = _rewrite(inner, fusable)
                if new is not None:
                    bound = _rewrap(cls.forward, path, new)
                    bound._tritonic_first_norm = new._tritonic_first_norm  # (read by _chain on the wrapper)
                    done[key] = (bound, info)
                else:
                    done[key] = info
            if isinstance(done[key], str) and any(isinstance(c, torch.nn.Module) and "Attention" in type(c).__name__
                                                   for c in module.children()):
                kept.append(f"residual add + norm ({cls.__name__}): {done[key]}")
        entry = done[key]
        if isinstance(entry, tuple):
            module.forward = types.MethodType(entry[0], module)
            n, _ = count.get(cls.__name__, (0, ()))
            count[cls.__name__] = (n + 1, tuple(entry[1]))
    replaced = [f"residual add + {'/'.join(norms)} -> one norm kernel in {c}.forward ({n})"
                for c, (n, norms) in count.items()]
    links = _chain(model)
    if links:
        replaced.append(f"residual add closing a layer + the next layer's first norm -> one norm kernel ({links})")
    return replaced, kept
