"""A reader for the VNNLIB subset of VNN-COMP's MNIST benchmarks (mnist_fc, mnistfc 2021, eran).

A VNNLIB file declares inputs ``X_0 … X_{n-1}`` and outputs ``Y_0 … Y_{m-1}``
(``(declare-const X_0 Real)``) and asserts constraints whose conjunction
describes the *unsafe* set: the property is violated ("sat") when some input
in the asserted box gives an output satisfying the asserted output
constraints. Supported::

    (assert (<= X_0 0.5))   (assert (>= X_0 0.1))   (assert (= X_0 0.2))
    (assert (>= Y_1 Y_4))   (assert (<= (+ Y_0 (* -2.0 Y_3)) 0.2))
    (assert (or (and (>= Y_0 Y_4)) (and (>= Y_1 Y_4) (<= Y_1 3.0))))
    (assert (and ...))      ; comments        plain or gzipped files

Input constraints must be per-variable bounds at the top level (conjunctions
allowed), bounding every input on both sides; output constraints are linear
(``+``, ``-``, ``*`` by a constant) and may be nested ``and``/``or``, which is
expanded to a disjunction of conjunctions. Strict ``<``/``>``, unknown
symbols, undeclared variables, nonlinear terms and input constraints inside
``or`` are rejected with a :class:`VnnlibError` naming the file and line.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Union

import numpy as np

from .io import read_maybe_gzipped

MAX_DISJUNCTS = 100_000
_IGNORED_COMMANDS = ("set-logic", "set-info", "check-sat", "get-model", "exit")


class VnnlibError(ValueError):
    """A VNNLIB file that cannot be read or uses unsupported syntax; the message names file and line."""


# -- tokens and s-expressions ----------------------------------------------------


@dataclass(frozen=True)
class Atom:
    text: str
    line: int


@dataclass(frozen=True)
class SList:
    items: tuple["SExpr", ...]
    line: int


SExpr = Union[Atom, SList]

_TOKEN = re.compile(r"\s+|;[^\n]*|\(|\)|[^\s();]+")


def tokenize(text: str, source: str = "<string>") -> Iterator[tuple[str, int]]:
    """``(token, line)`` pairs: parentheses and atoms; whitespace and ``;`` comments are skipped."""
    line, pos = 1, 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:  # pragma: no cover - the pattern matches any character
            raise VnnlibError(f"{source}:{line}: cannot read {text[pos:pos + 20]!r}")
        token = match.group()
        if token[0] == ";" or token[0].isspace():
            line += token.count("\n")
        elif token.startswith("|") or token.startswith('"'):
            raise VnnlibError(f"{source}:{line}: quoted symbols and strings are not supported ({token!r})")
        else:
            yield token, line
        pos = match.end()


def parse_sexprs(text: str, source: str = "<string>") -> list[SExpr]:
    """The top-level s-expressions of ``text``; unbalanced parentheses are an error with a line number."""
    stack: list[tuple[list[SExpr], int]] = []
    top: list[SExpr] = []
    for token, line in tokenize(text, source):
        if token == "(":
            stack.append(([], line))
        elif token == ")":
            if not stack:
                raise VnnlibError(f"{source}:{line}: unbalanced ')' with no matching '('")
            items, start = stack.pop()
            (stack[-1][0] if stack else top).append(SList(tuple(items), start))
        else:
            (stack[-1][0] if stack else top).append(Atom(token, line))
    if stack:
        raise VnnlibError(f"{source}:{stack[-1][1]}: unbalanced '(' is never closed")
    return top


# -- linear expressions and formulas ------------------------------------------------


@dataclass(frozen=True)
class _Linear:
    """``Σ coeffs[v]·v + const``."""

    coeffs: dict[str, float] = field(default_factory=dict)
    const: float = 0.0

    def scaled(self, k: float) -> "_Linear":
        return _Linear({v: k * c for v, c in self.coeffs.items()}, k * self.const)

    def plus(self, other: "_Linear") -> "_Linear":
        coeffs = dict(self.coeffs)
        for v, c in other.coeffs.items():
            coeffs[v] = coeffs.get(v, 0.0) + c
        return _Linear(coeffs, self.const + other.const)


@dataclass(frozen=True)
class _Atom:
    """The constraint ``Σ coeffs[v]·v ≤ rhs`` (from the source line ``line``)."""

    coeffs: dict[str, float]
    rhs: float
    line: int


_Dnf = list[list[_Atom]]  # OR of ANDs


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if np.isfinite(value) else None


class _Reader:
    """Turns the s-expressions of one file into declarations and DNF assertions."""

    def __init__(self, source: str):
        self.source = source
        self.declared: dict[str, int] = {}  # name -> line

    def error(self, line: int, message: str) -> VnnlibError:
        return VnnlibError(f"{self.source}:{line}: {message}")

    def head(self, expr: SExpr) -> str:
        if isinstance(expr, Atom) or not expr.items or not isinstance(expr.items[0], Atom):
            raise self.error(expr.line, f"expected a command or function application, got {_show(expr)}")
        return expr.items[0].text

    def declare(self, expr: SList) -> None:
        if len(expr.items) != 3 or not all(isinstance(i, Atom) for i in expr.items[1:]):
            raise self.error(expr.line, f"expected (declare-const NAME Real), got {_show(expr)}")
        name, sort = expr.items[1].text, expr.items[2].text  # type: ignore[union-attr]
        if sort != "Real":
            raise self.error(expr.line, f"variable {name} has sort {sort}; only Real is supported")
        if not re.fullmatch(r"[XY]_\d+", name):
            raise self.error(expr.line, f"variable {name} is not named X_<i> (input) or Y_<j> (output)")
        if name in self.declared:
            raise self.error(expr.line, f"variable {name} is declared twice (first on line {self.declared[name]})")
        self.declared[name] = expr.line

    def term(self, expr: SExpr) -> _Linear:
        """A linear term: a number, a declared variable, or +, -, * (by a constant) of terms."""
        if isinstance(expr, Atom):
            value = _number(expr.text)
            if value is not None:
                return _Linear({}, value)
            if expr.text in self.declared:
                return _Linear({expr.text: 1.0})
            if re.fullmatch(r"[XY]_\d+", expr.text):
                raise self.error(expr.line, f"variable {expr.text} is used but never declared")
            raise self.error(expr.line, f"unknown symbol {expr.text!r} in a term")
        op, args = self.head(expr), [self.term(a) for a in expr.items[1:]]
        if op == "+" and args:
            out = _Linear()
            for a in args:
                out = out.plus(a)
            return out
        if op == "-" and len(args) == 1:
            return args[0].scaled(-1.0)
        if op == "-" and len(args) >= 2:
            out = args[0]
            for a in args[1:]:
                out = out.plus(a.scaled(-1.0))
            return out
        if op == "*" and args:
            out = _Linear({}, 1.0)
            for a in args:
                if out.coeffs and a.coeffs:
                    raise self.error(expr.line, f"nonlinear term {_show(expr)}: a product of variables")
                out = a.scaled(out.const) if not out.coeffs else out.scaled(a.const)
            return out
        raise self.error(expr.line, f"unsupported function symbol {op!r} in term {_show(expr)}")

    def formula(self, expr: SExpr) -> _Dnf:
        """A boolean formula as a disjunction of conjunctions of ``≤`` atoms."""
        op = self.head(expr)
        args = expr.items[1:]  # type: ignore[union-attr]
        if op in ("<=", ">=", "="):
            if len(args) != 2:
                raise self.error(expr.line, f"{op} needs exactly two arguments, got {_show(expr)}")
            diff = self.term(args[0]).plus(self.term(args[1]).scaled(-1.0))  # lhs - rhs
            le = _Atom(diff.coeffs, -diff.const, expr.line)  # lhs - rhs <= 0
            ge = _Atom({v: -c for v, c in diff.coeffs.items()}, diff.const, expr.line)
            return [[le]] if op == "<=" else [[ge]] if op == ">=" else [[le, ge]]
        if op in ("<", ">"):
            raise self.error(expr.line, f"strict inequality {op!r} is not supported; use <= or >=")
        if op == "and":
            if not args:
                return [[]]
            parts = [self.formula(a) for a in args]
            size = int(np.prod([len(p) for p in parts], dtype=np.float64))
            if size > MAX_DISJUNCTS:
                raise self.error(expr.line, f"(and ...) of disjunctions expands to {size} disjuncts (limit {MAX_DISJUNCTS})")
            return [[a for conj in combo for a in conj] for combo in itertools.product(*parts)]
        if op == "or":
            if not args:
                raise self.error(expr.line, "(or) with no arguments is unsatisfiable; not supported")
            return [conj for a in args for conj in self.formula(a)]
        raise self.error(expr.line, f"unsupported function symbol {op!r} in {_show(expr)}")


def _show(expr: SExpr, limit: int = 60) -> str:
    def text(e: SExpr) -> str:
        return e.text if isinstance(e, Atom) else "(" + " ".join(text(i) for i in e.items) + ")"

    s = text(expr)
    return s if len(s) <= limit else s[: limit - 3] + "..."


# -- the property ------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class VnnlibProperty:
    """An input box and the output region that violates the property.

    Attributes:
        input_lower, input_upper: float64 arrays (n_inputs,) over the flat
            inputs ``X_0 … X_{n-1}`` (row-major flattening of the network input).
        disjuncts: list of ``(A_k, b_k)`` with ``A_k`` of shape (r_k, n_outputs)
            and ``b_k`` of shape (r_k,). The *violation* (unsafe, "sat") region is
            ``OR_k (A_k y ≤ b_k)``: the property is violated iff some x in the box
            has an output ``y = f(x)`` satisfying every row of some disjunct.
            A disjunct with no rows is satisfied by every output.
    """

    input_lower: np.ndarray
    input_upper: np.ndarray
    disjuncts: list[tuple[np.ndarray, np.ndarray]]

    @property
    def n_inputs(self) -> int:
        return int(self.input_lower.size)

    @property
    def n_outputs(self) -> int:
        return int(self.disjuncts[0][0].shape[1]) if self.disjuncts else 0

    def objectives(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All rows as objectives ``(C, d, disjunct)`` for a lower-bounding verifier.

        ``C`` is (m, n_outputs), ``d`` is (m,) and ``disjunct`` (m,) gives each
        row's disjunct index k. Row r is ``c_r·y + d_r`` with ``c_r = a_r`` and
        ``d_r = −b_r``, so disjunct k holds at y iff ``c_r·y + d_r ≤ 0`` for all
        of its rows. The property is therefore proved ("unsat") when, for every
        disjunct k, some row r of k has ``min_{x ∈ box} c_r·f(x) + d_r > 0``;
        see :meth:`verified_by`. For the MNIST benchmarks each disjunct is one row
        ``c = e_label − e_j, d = 0`` — the margin objective of
        :func:`lpverify.margin_objectives`, which must be *strictly* positive.
        """
        rows = [(a, b, k) for k, (a_k, b_k) in enumerate(self.disjuncts) for a, b in zip(a_k, b_k)]
        n = self.n_outputs
        if not rows:
            return np.zeros((0, n)), np.zeros(0), np.zeros(0, dtype=np.int64)
        c = np.stack([r[0] for r in rows])
        d = -np.array([r[1] for r in rows], dtype=np.float64)
        return c, d, np.array([r[2] for r in rows], dtype=np.int64)

    def verified_by(self, lower: np.ndarray) -> bool:
        """Whether lower bounds ``lower[r] ≤ min_{x ∈ box} c_r·f(x)`` (rows of :meth:`objectives`) prove the property.

        True iff every disjunct has a row with ``lower[r] + d_r > 0``; a disjunct
        with no rows can never be excluded.
        """
        _, d, owner = self.objectives()
        lower = np.asarray(lower, dtype=np.float64).reshape(-1)
        if lower.shape != d.shape:
            raise ValueError(f"expected {d.size} lower bounds (one per objective row), got {lower.size}")
        excluded = np.zeros(len(self.disjuncts), dtype=bool)
        np.logical_or.at(excluded, owner, lower + d > 0)
        return bool(excluded.all())

    def violated_by(self, y: np.ndarray, tol: float = 0.0) -> bool:
        """Whether the concrete output ``y`` (n_outputs,) lies in the violation region (``A_k y ≤ b_k + tol``)."""
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        if y.size != self.n_outputs:
            raise ValueError(f"expected an output of {self.n_outputs} values, got {y.size}")
        return any(bool(np.all(a @ y <= b + tol)) for a, b in self.disjuncts)

    def input_contains(self, x: np.ndarray, tol: float = 0.0) -> bool:
        """Whether the concrete input ``x`` (any shape with n_inputs elements, row-major) lies in the box."""
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        if x.size != self.n_inputs:
            raise ValueError(f"expected an input of {self.n_inputs} values, got {x.size}")
        return bool(np.all(x >= self.input_lower - tol) and np.all(x <= self.input_upper + tol))


def _read_text(path: Path) -> str:
    raw = read_maybe_gzipped(path, "VNNLIB", VnnlibError)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise VnnlibError(f"{path}: not a UTF-8 text file ({e})") from e


def _indexed(reader: _Reader, prefix: str) -> dict[str, int]:
    """Declared variables ``prefix_i`` by name → i, which must be exactly 0..n-1."""
    names = {name: int(name[2:]) for name in reader.declared if name.startswith(prefix)}
    if sorted(names.values()) != list(range(len(names))):
        gap = min(set(range(len(names))) - set(names.values()))
        after = min((n for n in names.items() if n[1] > gap), key=lambda n: n[1])[0]
        raise reader.error(
            reader.declared[after], f"{after} is declared but {prefix}{gap} is not; variables must be numbered from 0"
        )
    return names


def parse_vnnlib(text: str, source: str = "<string>", n_inputs: int | None = None, n_outputs: int | None = None) -> VnnlibProperty:
    """Parse VNNLIB ``text``; ``source`` names it in error messages. See :func:`read_vnnlib`."""
    reader = _Reader(source)
    asserts: list[tuple[SList, _Dnf]] = []
    for expr in parse_sexprs(text, source):
        command = reader.head(expr)
        if command == "declare-const":
            reader.declare(expr)  # type: ignore[arg-type]
        elif command == "assert":
            if len(expr.items) != 2:  # type: ignore[union-attr]
                raise reader.error(expr.line, f"assert takes one formula, got {_show(expr)}")
            asserts.append((expr, reader.formula(expr.items[1])))  # type: ignore[union-attr,arg-type]
        elif command in _IGNORED_COMMANDS:
            continue
        else:
            raise reader.error(expr.line, f"unsupported command {command!r}; expected declare-const or assert")

    xs, ys = _indexed(reader, "X_"), _indexed(reader, "Y_")
    for name, expected, have in (("inputs", n_inputs, len(xs)), ("outputs", n_outputs, len(ys))):
        if expected is not None and expected != have:
            raise VnnlibError(f"{source}: declares {have} {name} but {expected} were expected")
    if not xs:
        raise VnnlibError(f"{source}: declares no input variables X_0, X_1, ...")

    lower, upper = np.full(len(xs), -np.inf), np.full(len(xs), np.inf)
    output_dnf: _Dnf = [[]]
    for expr, dnf in asserts:
        atoms = [a for conj in dnf for a in conj]
        on_inputs = [a for a in atoms if any(v in xs for v in a.coeffs)]
        if on_inputs and len(dnf) > 1:
            raise reader.error(on_inputs[0].line, "input constraints inside (or ...) are not supported; only a box")
        for atom in on_inputs:
            _bound(reader, atom, xs, ys, lower, upper)
        # Top-level assertions are conjoined: distribute over the disjunctions so far.
        outputs = [[a for a in conj if not any(v in xs for v in a.coeffs)] for conj in dnf]
        size = len(output_dnf) * len(outputs)
        if size > MAX_DISJUNCTS:
            raise reader.error(expr.line, f"the assertions expand to {size} disjuncts (limit {MAX_DISJUNCTS})")
        output_dnf = [a + b for a, b in itertools.product(output_dnf, outputs)]
    for name, i in sorted(xs.items(), key=lambda kv: kv[1]):
        if not (np.isfinite(lower[i]) and np.isfinite(upper[i])):
            side = "lower" if not np.isfinite(lower[i]) else "upper"
            raise VnnlibError(f"{source}: input {name} (declared on line {reader.declared[name]}) has no {side} bound")
        if lower[i] > upper[i]:
            raise VnnlibError(f"{source}: input {name} has an empty range [{lower[i]}, {upper[i]}]")

    disjuncts = [_matrix(conj, ys) for conj in output_dnf]
    return VnnlibProperty(lower, upper, disjuncts)


def _bound(reader: _Reader, atom: _Atom, xs: dict[str, int], ys: dict[str, int], lower: np.ndarray, upper: np.ndarray) -> None:
    """Tighten the box with ``c·X_i ≤ rhs``; anything but a single-input bound is an error."""
    used = [v for v, c in atom.coeffs.items() if c != 0.0]
    if any(v in ys for v in used):
        raise reader.error(atom.line, "constraints mixing inputs and outputs are not supported")
    if len(used) != 1:
        raise reader.error(atom.line, f"input constraint on {sorted(used)} is not a box bound on one variable")
    name = used[0]
    c, i = atom.coeffs[name], xs[name]
    if c > 0:
        upper[i] = min(upper[i], atom.rhs / c)
    else:
        lower[i] = max(lower[i], atom.rhs / c)


def _matrix(conj: list[_Atom], ys: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    a = np.zeros((len(conj), len(ys)))
    b = np.zeros(len(conj))
    for r, atom in enumerate(conj):
        for v, c in atom.coeffs.items():
            a[r, ys[v]] += c
        b[r] = atom.rhs
    return a, b


def read_vnnlib(path: str | Path, n_inputs: int | None = None, n_outputs: int | None = None) -> VnnlibProperty:
    """Read a ``.vnnlib`` or gzipped ``.vnnlib.gz`` property.

    Args:
        path: the file (gzip is detected from its content, not its name).
        n_inputs, n_outputs: when given, the declared X and Y counts must match.

    Raises:
        FileNotFoundError: the file does not exist.
        VnnlibError (a ValueError): unsupported or malformed content, with
            ``file:line`` in the message; an input without both bounds.
    """
    path = Path(path)
    return parse_vnnlib(_read_text(path), str(path), n_inputs, n_outputs)
