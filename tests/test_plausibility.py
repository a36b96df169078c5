"""Numbers that do not fit their declared unit are named with the channels, what they read and the fix; correct
declarations (synthetic data and the three real archives) raise nothing."""

import numpy as np
import pytest

from harkd.data.catalog import load_recordings
from harkd.data.plausibility import Declared, stretches_of, unit_findings
from harkd.data.synthetic import make_recordings
from harkd.data.units import conversion_factor

# (modality, unit the numbers are in, unit the user declared)
ACC_MISTAKES = [("acc", "g", "m/s^2"), ("acc", "m/s^2", "g"), ("acc", "mg", "g")]
MISTAKES = ACC_MISTAKES + [("gyro", "deg/s", "rad/s"), ("gyro", "rad/s", "deg/s"), ("mag", "G", "uT"),
                           ("mag", "nT", "uT")]


def misdeclared(stretches, channels, modality, numbers_in, declared):
    """What a loader stores when numbers in `numbers_in` are declared as `declared`: it converts them from the
    declared unit to the channel's, as if they were in it; and the declarations, as a dataset.yaml gives them."""
    stored = np.array(stretches, dtype=np.float64)
    for i, c in enumerate(channels):
        if c.modality == modality:
            numbers = stored[:, i] * conversion_factor(c.unit, numbers_in, modality)
            stored[:, i] = numbers * conversion_factor(declared, c.unit, modality)
    said = [Declared(declared if c.modality == modality else c.unit, "own/dataset.yaml", f"channels[{i}]")
            for i, c in enumerate(channels)]
    return stored, said


@pytest.fixture(scope="module")
def synthetic():
    recordings = make_recordings(n_subjects=2, duration_s=120, rate_hz=25, modalities=("acc", "gyro", "mag"), seed=3)
    return stretches_of(recordings), recordings[0].channels


def test_synthetic_sensors_in_their_own_units_raise_nothing(synthetic):
    assert unit_findings(*synthetic) == []


@pytest.mark.parametrize("modality, numbers_in, declared", MISTAKES)
def test_a_wrong_unit_names_the_channels_and_the_unit_the_numbers_look_like(synthetic, modality, numbers_in,
                                                                           declared):
    stretches, channels = synthetic
    stored, said = misdeclared(stretches, channels, modality, numbers_in, declared)
    lines = unit_findings(stored, channels, said)
    keys = [[f"channels[{i}]" for i, c in enumerate(channels) if c.modality == modality and c.position == p]
            for p in ("right_wrist", "left_wrist")]
    assert len(lines) == 2, lines  # one per sensor
    for line, sensor_keys in zip(lines, keys):
        assert line.startswith(f"own/dataset.yaml: {', '.join(sensor_keys)}: "), line
        assert f" {declared} " in line and line.endswith(f"the numbers look like {numbers_in}: write unit: "
                                                         f"{numbers_in} for these channels"), line


def test_numbers_no_unit_explains_are_named_as_such(synthetic):
    stretches, channels = synthetic
    counts = np.array(stretches, dtype=np.float64)
    acc = [i for i, c in enumerate(channels) if c.modality == "acc"]
    counts[:, acc] *= 4096 / 9.80665  # raw counts of a +-8 g accelerometer, declared m/s^2
    lines = unit_findings(counts, channels)
    assert len(lines) == 2 and all("no unit harkd knows fits (raw sensor counts?" in line for line in lines)


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["dsads", "hapt", "openpack"])
def test_real_archives_pass_as_declared_and_a_wrong_accelerometer_unit_is_caught(installed_root, name):
    recordings = load_recordings(name, root=installed_root)
    stretches, channels = stretches_of(recordings), recordings[0].channels
    assert unit_findings(stretches, channels) == []  # no false alarm on the publisher's units
    sensors = len({(c.position, c.sensor) for c in channels if c.modality == "acc"})
    for modality, numbers_in, declared in ACC_MISTAKES:
        stored, said = misdeclared(stretches, channels, modality, numbers_in, declared)
        lines = unit_findings(stored, channels, said)
        assert len(lines) == sensors, (numbers_in, declared, lines)
        assert all(line.endswith(f"look like {numbers_in}: write unit: {numbers_in} for these channels")
                   for line in lines), lines


def test_a_gyroscope_that_turns_while_its_accelerometer_rests_is_named():
    """A wrist lying still for 30 s: gravity on the accelerometer, and on the gyroscope a bias no one subtracted."""
    from harkd.data.recording import sensor_channels

    channels = sensor_channels("left_wrist", "acc", "m/s^2", "xyz") + sensor_channels("left_wrist", "gyro", "rad/s",
                                                                                      "xyz")
    rng = np.random.default_rng(0)
    gravity = np.array([0, 0, 9.81, 0, 0, 0])[None, :, None]
    still = rng.normal(0, 0.02, (30, 6, 25)) + gravity
    moving = 3 * np.sin(np.linspace(0, 2 * np.pi, 25))[None, None] * rng.uniform(0.5, 1, (30, 6, 1)) + gravity
    assert unit_findings(np.concatenate([still, moving]), channels) == []
    still[:, 3] += 1.5
    lines = unit_findings(np.concatenate([still, moving]), channels)
    gyro = ", ".join(c.name for c in channels[3:])
    assert len(lines) == 1 and lines[0].startswith(f"channels: {gyro}: left_wrist/gyro reads 1.5 rad/s (median) "
                                                   f"while left_wrist/acc is still (30 seconds)"), lines
    assert lines[0].endswith("subtract its bias, or check that these columns are a gyroscope's")
