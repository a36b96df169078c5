"""A student on a live stream: samples in (the model's channels, in its units), one prediction per hop out.

A model is opened by stream_model.open_model (PyTorch, ONNX Runtime or TFLite Micro); `StreamPredictor` keeps a
ring buffer of one window and scores it every `hop` samples, optionally smoothed over the last k predictions;
`Stream` puts gap handling (short NaN or missing-row gaps interpolated as in loading, longer ones reset the buffer
and are reported) and resampling in front of it; `read_rows` parses CSV text line by line for
`harkd stream`, each bad line a one-line error naming it, after `choose_reading` has decided whether a file is a plain
CSV or a session of the user's own dataset (its dataset.yaml in the file's folder or above).
"""

from __future__ import annotations

import time as clock
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable, Iterator, Sequence

import numpy as np

from harkd.data.plausibility import Declared, unit_findings
from harkd.data.recording import max_gap_samples
from harkd.deploy.stream_input import InputFormat, read_rows
from harkd.deploy.stream_model import StreamModel
from harkd.errors import HarkdError

RATE_TOLERANCE = 0.05  # as the generic loader: a rate off by more than this is another rate
SMOOTHING = ("majority", "mean")

@dataclass
class Prediction:
    start: float  # time of the window's first sample
    end: float  # time just after its last sample (start + window / rate at the model's rate)
    label: str  # after smoothing
    raw_label: str  # this window's own argmax
    probabilities: np.ndarray

    def to_json(self, class_names: Sequence[str]) -> dict:
        return {"event": "prediction", "start": round(self.start, 6), "end": round(self.end, 6), "class": self.label,
                "raw_class": self.raw_label,
                "probabilities": {c: round(float(p), 6) for c, p in zip(class_names, self.probabilities)}}


@dataclass
class Gap:
    start: float  # last good sample before the gap
    end: float  # first good sample after it
    missing: int  # samples that were missing or NaN

    def to_json(self, class_names: Sequence[str] = ()) -> dict:
        return {"event": "gap", "start": round(self.start, 6), "end": round(self.end, 6), "missing": self.missing,
                "note": "longer than the interpolation limit: the window buffer restarts after it"}


class StreamPredictor:
    """A ring buffer of one window of finite samples; every `hop` samples once full, one prediction.

    Sample by sample it gives the predictions of windowing the same samples at stride `hop` from the first sample.
    """

    def __init__(self, model: StreamModel, hop: int | None = None, smooth: int = 1, smoothing: str = "majority"):
        hop = model.hop if hop is None else hop
        if hop < 1:
            raise HarkdError(f"hop must be at least 1 sample, got {hop}")
        if smooth < 1:
            raise HarkdError(f"smoothing over {smooth} predictions: needs at least 1")
        if smoothing not in SMOOTHING:
            raise HarkdError(f"smoothing {smoothing!r}: expected one of {', '.join(SMOOTHING)}")
        self.model, self.hop, self.smoothing = model, hop, smoothing
        self._buffer = np.zeros((len(model.channels), model.window), np.float32)
        self._times = np.zeros(model.window)
        self._recent: deque[np.ndarray] = deque(maxlen=smooth)
        self.latencies: list[float] = []  # seconds from the sample that completes a window to its prediction
        self.reset()

    def reset(self) -> None:
        """Forget the buffer and the smoothing history (after a gap)."""
        self._seen = 0
        self._recent.clear()

    def push(self, time: float, sample: np.ndarray) -> Prediction | None:
        at = self._seen % self.model.window
        self._buffer[:, at] = sample
        self._times[at] = time
        self._seen += 1
        if self._seen < self.model.window or (self._seen - self.model.window) % self.hop:
            return None
        started = clock.perf_counter()
        oldest = self._seen % self.model.window
        window = np.roll(self._buffer, -oldest, axis=1)
        prediction = self._predict(float(self._times[oldest]), window)
        self.latencies.append(clock.perf_counter() - started)
        return prediction

    def _predict(self, start: float, window: np.ndarray) -> Prediction:
        probabilities = self.model.score(window[None])[0]
        self._recent.append(probabilities)
        names = self.model.class_names
        if self.smoothing == "mean":
            label = int(np.mean(self._recent, axis=0).argmax())
        else:  # ties go to the most recent of the tied classes
            votes = [int(p.argmax()) for p in self._recent]
            counts = np.bincount(votes, minlength=len(names))
            label = next(v for v in reversed(votes) if counts[v] == counts.max())
        end = start + self.model.window / self.model.rate_hz
        return Prediction(start, end, names[label], names[int(probabilities.argmax())], probabilities)


class GapFiller:
    """Samples in time order; NaN values and missing rows (a time step of more than one sample period) are
    interpolated per channel when the run is at most `max_gap_s` long (as loading does), else they are a gap.

    `push` and `finish` return what is ready, in order: finite (time, sample) pairs and Gap events.
    """

    def __init__(self, rate_hz: float, max_gap_s: float):
        self.rate_hz, self.max_gap = rate_hz, max_gap_samples(max_gap_s, rate_hz)
        self._anchor: tuple[float, np.ndarray] | None = None  # the last finite sample
        self._pending: list[tuple[float, np.ndarray]] = []  # samples after it with some value NaN
        self._run: np.ndarray | int = 0  # per channel: how many samples in a row it has been NaN
        self._gap: Gap | None = None  # open until the next finite sample
        self._last: float | None = None

    def push(self, time: float, sample: np.ndarray) -> list:
        if self._last is not None and not time > self._last:
            raise HarkdError(f"time {time:g} s is not after the previous sample's {self._last:g} s")
        missing = 0 if self._last is None else int(round((time - self._last) * self.rate_hz)) - 1
        out: list = []
        if missing > self.max_gap:
            self._open_gap(self._last, missing)
        else:  # rows that never came are NaN rows, filled the same way
            for k in range(1, missing + 1):
                out += self._take(self._last + k / self.rate_hz, np.full(len(sample), np.nan))
        self._last = time
        return out + self._take(time, np.asarray(sample, np.float64))

    def _take(self, time: float, sample: np.ndarray) -> list:
        nan = np.isnan(sample)
        if self._gap is not None:
            if nan.any():
                self._gap.missing += 1
                return []
            self._gap.end, gap, self._gap = time, self._gap, None
            self._anchor = (time, sample)
            return [gap, (time, sample)]
        self._run = np.where(nan, self._run + 1, 0)
        if self._run.max() > self.max_gap:
            self._open_gap(time, 1)
            return []
        if nan.any():
            self._pending.append((time, sample))
            return []
        ready = self._fill(end=(time, sample))
        self._anchor = (time, sample)
        return ready + [(time, sample)]

    def _open_gap(self, time: float, missing: int) -> None:
        """What is pending is dropped; the stream restarts at the next finite sample."""
        start = self._anchor[0] if self._anchor else self._pending[0][0] if self._pending else time
        self._gap = Gap(start, time, missing + len(self._pending))
        self._anchor, self._pending, self._run = None, [], 0

    def _fill(self, end: tuple[float, np.ndarray] | None) -> list:
        """The pending samples, each NaN interpolated between the finite values around it (np.interp: held
        constant at an edge with nothing beyond it, as loading does)."""
        if not self._pending:
            return []
        points = ([self._anchor] if self._anchor else []) + self._pending + ([end] if end else [])
        block = np.stack([s for _, s in points])
        t = np.arange(len(block))
        for c in np.flatnonzero(np.isnan(block).any(axis=0)):
            good = ~np.isnan(block[:, c])
            block[~good, c] = np.interp(t[~good], t[good], block[good, c])
        first = 1 if self._anchor else 0
        filled = [(time, block[first + i]) for i, (time, _) in enumerate(self._pending)]
        self._pending = []
        return filled

    def finish(self) -> list:
        """At the end: a gap still open is reported; NaN values after the last finite sample hold it."""
        if self._gap is not None:
            gap, self._gap = self._gap, None
            gap.end = self._last
            return [gap]
        return self._fill(end=None) if self._anchor else []


class Resampler:
    """One run of samples (between gaps) to the model's rate with scipy's polyphase filter; a run is complete only
    at a gap or the end, so resampled input is scored then."""

    def __init__(self, from_hz: float, to_hz: float):
        ratio = Fraction(to_hz / from_hz).limit_denominator(1000)
        self.up, self.down, self.to_hz = ratio.numerator, ratio.denominator, to_hz
        self._run: list[tuple[float, np.ndarray]] = []

    def push(self, time: float, sample: np.ndarray) -> None:
        self._run.append((time, sample))

    def flush(self) -> list[tuple[float, np.ndarray]]:
        from scipy.signal import resample_poly

        if not self._run:
            return []
        start = self._run[0][0]
        signals = resample_poly(np.stack([s for _, s in self._run]), self.up, self.down, axis=0)
        self._run = []
        return [(start + i / self.to_hz, row) for i, row in enumerate(signals)]


class Segments:
    """Consecutive predictions of one class merged into activity segments; a gap ends a segment."""

    def __init__(self) -> None:
        self.done: list[dict] = []
        self.gaps = 0
        self._open: dict | None = None

    def add(self, event: Prediction | Gap) -> None:
        if isinstance(event, Prediction) and self._open and self._open["class"] == event.label:
            self._open["end"], self._open["predictions"] = event.end, self._open["predictions"] + 1
            return
        self.close()
        self.gaps += isinstance(event, Gap)
        if isinstance(event, Prediction):
            self._open = {"class": event.label, "start": event.start, "end": event.end, "predictions": 1}

    def close(self) -> list[dict]:
        if self._open:
            self.done.append({k: round(v, 6) if isinstance(v, float) else v for k, v in self._open.items()})
            self._open = None
        return self.done


class Stream:
    """Samples in (time in seconds, one value per model channel, NaN where missing), predictions and gaps out.

    `input_rate_hz` is the samples' rate (default the model's); another rate is an error unless `resample`.
    """

    def __init__(self, model: StreamModel, input_rate_hz: float | None = None, resample: bool = False,
                 max_gap_s: float = 1.0, hop: int | None = None, smooth: int = 1, smoothing: str = "majority"):
        rate = input_rate_hz or model.rate_hz
        other_rate = abs(rate - model.rate_hz) > RATE_TOLERANCE * model.rate_hz
        if other_rate and not resample:
            raise HarkdError(f"the input is sampled at {rate:.4g} Hz, the model expects {model.rate_hz:g} Hz "
                             f"(--resample converts it)")
        self.filler = GapFiller(rate, max_gap_s)
        self.resampler = Resampler(rate, model.rate_hz) if other_rate else None
        self.predictor = StreamPredictor(model, hop, smooth, smoothing)
        self.segments = Segments()

    def push(self, time: float, sample: Sequence[float]) -> list[Prediction | Gap]:
        return self._route(self.filler.push(time, np.asarray(sample, np.float64)))

    def finish(self) -> list[Prediction | Gap]:
        events = self._route(self.filler.finish()) + self._score(self._flush())
        self.segments.close()
        return events

    def _route(self, items: list) -> list[Prediction | Gap]:
        events: list[Prediction | Gap] = []
        for item in items:
            if isinstance(item, Gap):
                events += self._score(self._flush())
                self.predictor.reset()
                self.segments.add(item)
                events.append(item)
            elif self.resampler:
                self.resampler.push(*item)
            else:
                events += self._score([item])
        return events

    def _flush(self) -> list[tuple[float, np.ndarray]]:
        return self.resampler.flush() if self.resampler else []

    def _score(self, samples: list[tuple[float, np.ndarray]]) -> list[Prediction]:
        events = []
        for time, sample in samples:
            prediction = self.predictor.push(time, sample)
            if prediction is not None:
                self.segments.add(prediction)
                events.append(prediction)
        return events


def measured_rate(times: Sequence[float]) -> float | None:
    """The rate the first rows' times give (median step), None with fewer than two rows."""
    steps = np.diff(np.asarray(times, np.float64))
    return 1.0 / float(np.median(steps)) if len(steps) and np.median(steps) > 0 else None


def stream_csv(model: StreamModel, lines: Iterable[str], source: str, spec: InputFormat, resample: bool = False,
               hop: int | None = None, smooth: int = 1, smoothing: str = "majority", realtime: bool = False
               ) -> Iterator[dict]:
    """What `harkd stream` prints, as dicts in order: a start line, each prediction and gap as soon as it is known,
    a summary of activity segments at the end. Errors name the input line; what was yielded before stands."""
    import itertools

    rows = read_rows(lines, source, spec)
    first = list(itertools.islice(rows, 16))  # enough rows to measure the rate when the input does not say it
    rate = spec.rate_hz or measured_rate([t for _, t, _ in first]) or model.rate_hz
    stream = Stream(model, rate, resample, spec.max_gap_s, hop, smooth, smoothing)
    yield {"event": "start", "model": model.source, "classes": model.class_names, "channels": model.channel_names,
           "window": model.window, "hop": stream.predictor.hop, "rate_hz": model.rate_hz, "input_rate_hz": rate}
    started, t0, samples, busy = clock.monotonic(), None, 0, 0.0
    units = UnitsCheck(model, spec, source, rate)
    for line, time, values in itertools.chain(first, rows):
        yield from units.push(values)
        if realtime:  # replay at the input's own pace
            t0 = time if t0 is None else t0
            clock.sleep(max(0.0, (time - t0) - (clock.monotonic() - started)))
        began = clock.perf_counter()
        try:
            events = stream.push(time, values)
        except HarkdError as exc:
            raise HarkdError(f"{source}: line {line}: {exc}") from None
        busy += clock.perf_counter() - began
        samples += 1
        yield from (e.to_json(model.class_names) for e in events)
    yield from (e.to_json(model.class_names) for e in stream.finish())
    yield from units.finish()
    segments = stream.segments.done
    yield {"event": "summary", "predictions": sum(s["predictions"] for s in segments),
           "gaps": stream.segments.gaps, "segments": segments, **_speed(stream.predictor.latencies, samples, busy)}


class UnitsCheck:
    """The plausibility check of `harkd data check` on a stream's first minute: a warning event for each sensor whose
    numbers do not fit the units the input is declared in (a stream of g read as m/s^2 predicts one class)."""

    SECONDS = 60.0

    def __init__(self, model: StreamModel, spec: InputFormat, source: str, rate_hz: float):
        self.channels, self.length = model.specs, max(1, round(rate_hz))  # 1 s stretches, as data check cuts them
        self.declared = spec.declared or tuple(Declared(c.unit, source, f"column {name}", in_yaml=False)
                                               for c, name in zip(self.channels, spec.columns))
        self.wanted = max(1, round(self.SECONDS * rate_hz))
        self.samples: list[np.ndarray] | None = []

    def push(self, values: np.ndarray) -> list[dict]:
        if self.samples is None:
            return []
        if not np.isnan(values).any():
            self.samples.append(values)
        return self.finish() if len(self.samples) >= self.wanted else []

    def finish(self) -> list[dict]:
        """The warnings (once): after the first minute, or at the end of a shorter input."""
        if self.samples is None:
            return []
        n = len(self.samples) // self.length * self.length
        samples, self.samples = np.array(self.samples[:n]), None
        if not n:
            return []
        stretches = samples.reshape(n // self.length, self.length, -1).transpose(0, 2, 1)
        return [{"event": "warning", "message": line}
                for line in unit_findings(stretches, self.channels, self.declared)]


def _speed(latencies: list[float], samples: int, busy: float) -> dict:
    """Latency per hop (the push that completes a window: assembling, scoring, smoothing) as p50/p99 in ms, and the
    samples per second the stream took in while working (time spent reading input or replaying in real time not
    counted)."""
    ms = 1000 * np.asarray(latencies)
    hops = {"p50": round(float(np.median(ms)), 4), "p99": round(float(np.percentile(ms, 99)), 4)} if latencies else None
    return {"latency_ms_per_hop": hops, "samples_per_second": round(samples / busy) if busy > 0 else None}
