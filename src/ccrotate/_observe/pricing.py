"""What a request cost: a per-model price table read from one JSON data file.

The bundled ``pricing.json`` holds USD per million tokens for input, output,
cache reads and (5-minute) cache writes. Users point ccrotate at their own copy
when prices change. A model the table does not know costs ``None``: an
estimate that silently borrows another model's price would be worse than none.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ccrotate._checks import at_least, non_negative
from ccrotate._exceptions import ConfigError

__all__ = ["ModelPrice", "PricingTable"]

# A dated or "-latest" id is the same model as its base id; "[1m]" is a
# client-side context selector some tools append.
_SUFFIX = re.compile(r"(?:[-@](?:\d{8}|latest))?(?:\[[^\]]*\])?$")
_FIELDS = ("input", "output", "cache_read", "cache_write")
_MILLION = 1_000_000.0


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per million tokens of each kind."""

    input: float
    output: float
    cache_read: float
    cache_write: float

    def __post_init__(self) -> None:
        # A negative price would make every cost figure after it silently wrong.
        for name in _FIELDS:
            non_negative("Rates", name, getattr(self, name))


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """The price of one model.

    Parameters:
        base: the rates of an ordinary request.
        long_prompt: rates for every token of a request whose prompt (input, cache
            read and cache write tokens) exceeds ``long_threshold``, or ``None``.
    """

    base: Rates
    long_prompt: Rates | None = None
    long_threshold: int | None = None

    def __post_init__(self) -> None:
        for name in ("base", "long_prompt"):
            value = getattr(self, name)
            if not isinstance(value, Rates) and not (name == "long_prompt" and value is None):
                raise ConfigError(f"ModelPrice.{name}: must be Rates (got {value!r})")
        if (self.long_prompt is None) != (self.long_threshold is None):
            raise ConfigError("ModelPrice.long_threshold: give it together with long_prompt "
                              f"(got long_threshold={self.long_threshold!r})")
        if self.long_threshold is not None:
            at_least("ModelPrice", "long_threshold", self.long_threshold, 1)

    def cost(self, input_tokens: int = 0, output_tokens: int = 0, cache_read_tokens: int = 0,
             cache_write_tokens: int = 0) -> float:
        """USD for one request with these token counts."""
        rates = self.base
        prompt = input_tokens + cache_read_tokens + cache_write_tokens
        if self.long_prompt is not None and self.long_threshold is not None \
                and prompt > self.long_threshold:
            rates = self.long_prompt
        return (input_tokens * rates.input + output_tokens * rates.output
                + cache_read_tokens * rates.cache_read
                + cache_write_tokens * rates.cache_write) / _MILLION


class PricingTable:
    """Model prices, looked up by model id.

    Build one with :meth:`load` (the bundled file, or your own) or
    :meth:`from_dict`. ``price_for("claude-sonnet-4-20250514")`` finds
    ``claude-sonnet-4``; an id the table does not hold gives ``None``.

    Parameters:
        prices: model id to :class:`ModelPrice`.
        updated: when the prices were last checked (free text from the file).
        source: where the table was read from.
    """

    def __init__(self, prices: Mapping[str, ModelPrice], *, updated: str | None = None,
                 source: str | None = None) -> None:
        for model, price in prices.items():
            if not isinstance(model, str) or not model or not isinstance(price, ModelPrice):
                raise ConfigError(f"PricingTable.prices: expected model id -> ModelPrice "
                                  f"(got {model!r}: {type(price).__name__})")
        self._prices = dict(prices)
        self.updated = updated
        self.source = source
        self._cache: dict[str, ModelPrice | None] = {}

    def __repr__(self) -> str:
        return f"<PricingTable models={len(self._prices)} updated={self.updated!r}>"

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and self.price_for(model) is not None

    @property
    def models(self) -> list[str]:
        """The model ids (and aliases) the table prices."""
        return sorted(self._prices)

    @classmethod
    def load(cls, path: str | Path | None = None) -> PricingTable:
        """Read a pricing file; ``None`` reads the one shipped with ccrotate.

        Raises :class:`ConfigError` naming the file and the entry when it is malformed.
        """
        if path is None:
            text = resources.files("ccrotate").joinpath("pricing.json").read_text("utf-8")
            where = "ccrotate/pricing.json"
        else:
            where = str(path)
            try:
                text = Path(path).expanduser().read_text("utf-8")
            except OSError as exc:
                raise ConfigError(f"{where}: cannot read the pricing file: {exc}") from exc
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{where}: invalid JSON: {exc}") from exc
        return cls.from_dict(data, source=where)

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<dict>") -> PricingTable:
        """Build a table from the parsed content of a pricing file."""
        if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
            raise ConfigError(f"{source}: expected an object with a 'models' object")
        prices: dict[str, ModelPrice] = {}
        for model, entry in data["models"].items():
            where = f"{source}: model {model!r}"
            if not isinstance(entry, dict):
                raise ConfigError(f"{where}: expected an object of prices")
            price = ModelPrice(_rates(entry, where))
            long = entry.get("long_prompt")
            if long is not None:
                threshold = long.get("threshold_tokens") if isinstance(long, dict) else None
                if not isinstance(threshold, int) or isinstance(threshold, bool) \
                        or threshold <= 0:
                    raise ConfigError(f"{where}: long_prompt needs threshold_tokens > 0")
                price = ModelPrice(price.base, _rates(long, where + " long_prompt"), threshold)
            aliases = entry.get("aliases", [])
            if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
                raise ConfigError(f"{where}: aliases must be a list of model ids")
            for name in (model, *aliases):
                prices[name] = price
        updated = data.get("updated")
        return cls(prices, updated=updated if isinstance(updated, str) else None,
                   source=source)

    def price_for(self, model: str | None) -> ModelPrice | None:
        """The price of ``model`` (exact id, or a dated/``-latest`` form of one), else ``None``."""
        if not model:
            return None
        try:
            return self._cache[model]
        except KeyError:
            pass
        price = self._prices.get(model)
        if price is None:
            base = _SUFFIX.sub("", model, count=1)
            price = self._prices.get(base)
        if len(self._cache) < 4096:  # bounded: model ids come from clients
            self._cache[model] = price
        return price

    def cost(self, model: str | None, *, input_tokens: int | None = None,
             output_tokens: int | None = None, cache_read_tokens: int | None = None,
             cache_write_tokens: int | None = None) -> float | None:
        """Estimated USD of one request; ``None`` for an unknown model or no usage at all."""
        # Spelled out rather than generators: this runs for every access-log entry.
        if (input_tokens is None and output_tokens is None and cache_read_tokens is None
                and cache_write_tokens is None):
            return None
        price = self.price_for(model)
        if price is None:
            return None
        return price.cost(input_tokens or 0, output_tokens or 0, cache_read_tokens or 0,
                          cache_write_tokens or 0)


def _rates(entry: Mapping[str, Any], where: str) -> Rates:
    values: list[float] = []
    for name in _FIELDS:
        value = entry.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"{where}: {name!r} must be a number >= 0 (USD per million tokens)")
        values.append(float(value))
    return Rates(*values)
