"""Units are units: the table converts exactly to each modality's SI unit, the generic format converts at load time,
and a kept model converts or refuses data in other units than it was trained on."""

import math

import numpy as np
import pytest
import torch

from harkd.data.loaders import dsads, hapt, openpack
from harkd.data.loaders.generic import load_generic
from harkd.data.recording import sensor_channels
from harkd.data.splits import Normaliser
from harkd.data.synthetic import make_recordings
from harkd.data.units import SI_UNITS, channel_factors, conversion_factor, convert_to, known_units, to_si
from harkd.data.windowing import WindowSet
from harkd.models.bundle import ModelBundle
from harkd.models.bundle import bundle_inputs
from harkd.errors import HarkdError
from harkd.models.base import build_model

# Each accepted spelling with its value in the modality's SI unit, written out from the definitions.
DEFINITIONS = [
    ("acc", "m/s^2", 1.0), ("acc", "m/s2", 1.0), ("acc", "m/s²", 1.0), ("acc", "g", 9.80665), ("acc", "G", 9.80665),
    ("acc", "mg", 0.00980665),
    ("gyro", "rad/s", 1.0), ("gyro", "mrad/s", 0.001), ("gyro", "deg/s", math.pi / 180),
    ("gyro", "dps", math.pi / 180), ("gyro", "°/s", math.pi / 180),
    ("mag", "uT", 1.0), ("mag", "µT", 1.0), ("mag", "μT", 1.0), ("mag", "nT", 0.001), ("mag", "mT", 1000.0),
    ("mag", "T", 1e6), ("mag", "G", 100.0), ("mag", "mG", 0.1),
    ("quat", "1", 1.0), ("quat", "", 1.0),
]


def test_the_table_is_the_definitions():
    assert {(m, u) for m, u, _ in DEFINITIONS} == {(m, u) for m in SI_UNITS for u in known_units(m) + [""]
                                                   if (u or m == "quat") and u != "a.u."}
    for modality, unit, value in DEFINITIONS:
        assert to_si(unit, modality, "x") == (SI_UNITS[modality], pytest.approx(value, rel=1e-15))


def test_g_and_deg_per_s_convert_exactly():
    g = np.array([1.0, -2.0, 0.5])
    assert convert_to(g, "g", "m/s^2", "acc").tolist() == [9.80665, -19.6133, 4.903325]
    assert convert_to(np.array([9.80665]), "m/s^2", "g", "acc").tolist() == [1.0]
    assert convert_to(np.array([180.0, 90.0, -360.0]), "deg/s", "rad/s", "gyro").tolist() == [
        math.pi, math.pi / 2, -2 * math.pi]
    assert convert_to(np.array([math.pi]), "rad/s", "dps", "gyro").tolist() == [180.0]
    assert convert_to(np.array([1.0]), "G", "uT", "mag").tolist() == [100.0]  # G of a magnetometer: gauss
    same = np.array([1.5], np.float32)
    assert convert_to(same, "g", "g", "acc") is same


@pytest.mark.parametrize("call, message", [
    (lambda: to_si("furlong/s^2", "acc", "ds/dataset.yaml: channels[0].unit"),
     "ds/dataset.yaml: channels[0].unit: unknown unit 'furlong/s^2' for modality 'acc'; use one of m/s^2"),
    (lambda: to_si("", "gyro", "here"), "here: modality 'gyro' needs a unit; use one of rad/s"),
    (lambda: conversion_factor("a.u.", "uT", "mag", "model"), "model: mag data in 'a.u.' cannot be converted to 'uT'"),
    (lambda: conversion_factor("pF", "nF", "capacitive"), "units: capacitive data in 'pF' cannot be converted to 'nF'"),
    (lambda: conversion_factor("g", "rad/s", "acc"), "units: unknown unit 'rad/s' for modality 'acc'"),
])
def test_unknown_or_unconvertible_units_are_one_line(call, message):
    with pytest.raises(HarkdError) as info:
        call()
    assert message in str(info.value) and "\n" not in str(info.value)


def test_free_text_units_of_other_modalities_are_kept():
    assert to_si("pF", "capacitive", "x") == ("pF", 1.0)
    assert to_si("a.u.", "mag", "x") == ("a.u.", 1.0)
    assert conversion_factor("pF", "pF", "capacitive") == 1.0


@pytest.mark.parametrize("channels", [dsads.CHANNELS, hapt.CHANNELS, openpack.channels(include_e4=True),
                                      make_recordings(n_subjects=1, duration_s=10, modalities=("acc", "gyro", "mag",
                                                                                                "quat"))[0].channels],
                         ids=["dsads", "hapt", "openpack", "synthetic"])
def test_built_in_datasets_declare_units_the_table_knows(channels):
    for spec in channels:
        to_si(spec.unit, spec.modality, spec.name)  # raises for a unit outside the table


def test_generic_format_converts_to_si_at_load_time(tmp_path):
    (tmp_path / "dataset.yaml").write_text(
        "name: units\nrate_hz: 10\nsessions: '{subject}_{label}.csv'\nchannels:\n"
        "  - {column: ax, position: wrist, modality: acc, axis: x, unit: g, orientation: x towards the fingers}\n"
        "  - {column: gx, position: wrist, modality: gyro, axis: x, unit: deg/s, placement: dorsal side}\n"
        "  - {column: mx, position: wrist, modality: mag, axis: x, unit: a.u.}\n"
        "  - {column: cap, position: hand, modality: capacitive, axis: palm, unit: pF}\n")
    values = np.array([[1.0, 180.0, 3.0, 8.5], [-0.5, 90.0, 4.0, 9.0]])
    (tmp_path / "S1_walk.csv").write_text("ax,gx,mx,cap\n" + "\n".join(",".join(map(str, r)) for r in values) + "\n")
    rec = load_generic(tmp_path)[0]
    assert [c.unit for c in rec.channels] == ["m/s^2", "rad/s", "a.u.", "pF"]
    assert rec.channels[0].orientation == "x towards the fingers" and rec.channels[1].placement == "dorsal side"
    expected = values * [9.80665, math.pi / 180, 1.0, 1.0]
    np.testing.assert_array_equal(rec.signals, expected.astype(np.float32))


def _bundle(channels, n_classes=2, window=8):
    torch.manual_seed(0)
    model = build_model("cnn_student", len(channels), n_classes)
    normaliser = Normaliser(np.zeros(len(channels), np.float32), np.ones(len(channels), np.float32))
    return ModelBundle.of(model, "cnn_student", {}, channels, ["a", "b"][:n_classes], window, 25.0, normaliser)


def _windows(channels, x):
    n = len(x)
    return WindowSet(x=x, y=np.zeros(n, np.int64), subjects=np.full(n, "S1"), sessions=np.full(n, "s"),
                     channels=tuple(channels), class_names=("a", "b"), rate_hz=25.0)


def test_a_kept_model_converts_data_in_other_units():
    """What personalise (bundle_inputs) and predict(channels=...) do: m/s^2 model, g and deg/s data."""
    model_channels = sensor_channels("wrist", "acc", "m/s^2") + sensor_channels("wrist", "gyro", "rad/s")
    data_channels = sensor_channels("wrist", "acc", "g") + sensor_channels("wrist", "gyro", "deg/s")
    bundle = _bundle(model_channels)
    x = np.random.default_rng(0).normal(size=(4, 6, 8)).astype(np.float32)
    converted = bundle_inputs(bundle, _windows(data_channels, x), "student on mydata")
    factors = np.array([9.80665] * 3 + [math.pi / 180] * 3)
    np.testing.assert_array_equal(converted, (x * factors[:, None]).astype(np.float32))
    np.testing.assert_array_equal(bundle.predict(x, channels=data_channels), bundle.predict(converted))
    assert bundle_inputs(bundle, _windows(model_channels, x), "same units") is not None


@pytest.mark.parametrize("data_unit, message", [
    ("a.u.", "student on mydata: channel wrist/mag/x: mag data in 'a.u.' cannot be converted to 'uT'"),
    ("furlong", "student on mydata: channel wrist/mag/x: unknown unit 'furlong' for modality 'mag'"),
])
def test_a_kept_model_refuses_data_that_cannot_convert(data_unit, message):
    bundle = _bundle(sensor_channels("wrist", "mag", "uT"))
    x = np.zeros((2, 3, 8), np.float32)
    for call in (lambda: bundle_inputs(bundle, _windows(sensor_channels("wrist", "mag", data_unit), x),
                                       "student on mydata"),
                 lambda: bundle.predict(x, channels=sensor_channels("wrist", "mag", data_unit))):
        with pytest.raises(HarkdError) as info:
            call()
        assert message.split(": ", 1)[1] in str(info.value) and "\n" not in str(info.value)


def test_channel_factors_for_a_stream():
    """The check a streaming predictor makes of its input against the model's channels."""
    model = sensor_channels("wrist", "acc", "m/s^2")
    assert channel_factors(sensor_channels("wrist", "acc", "G"), model, "stream").tolist() == [9.80665] * 3
    with pytest.raises(HarkdError, match="stream: 3 channels given for 2"):
        channel_factors(model, model[:2], "stream")
