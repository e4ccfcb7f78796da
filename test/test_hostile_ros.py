"""forecast_node under hostile and odd input, on real DDS (issue 13, node side).

The node runs in its own process with the real Forecaster on a tiny random-weight model; this
process generates the hostile input (decompression bombs, a 1 MB frame_id, stamps past 2038,
1x4000 frames, overflowing weights, bad parameters, a namesake node, 12 Mpx frames) and checks
what comes back: Futures, the debug image, /diagnostics, the log, the node's peak memory. After
every bad frame the next good frame must still be forecast: nothing good is lost.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")

import yaml  # noqa: E402
from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from deltaworld_ros.futures_msg import MAX_FRAME_ID_LENGTH  # noqa: E402
from deltaworld_ros.image_conversion import array_to_image_msg  # noqa: E402
from ros_harness import CONTEXT, REPO, TINY, Harness, NodeProcess, smooth_frame, write_model_config  # noqa: E402

OUTPUT = (24, 32)
RNG = np.random.default_rng(13)


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory) -> Path:
    return write_model_config(tmp_path_factory.mktemp("model") / "tiny.yaml", TINY)


@pytest.fixture
def harness_factory(ros_node):
    made = []

    def make(**kwargs) -> Harness:
        made.append(Harness(ros_node, **kwargs))
        return made[-1]

    yield make
    for harness in made:
        harness.close()


# ---------------------------------------------------------------- raw images
def test_hostile_raw_frames_are_rejected_and_good_frames_after_them_forecast(tmp_path, ros_env, harness_factory,
                                                                             tiny_config):
    """Items 2, 3, 13: a 1 MB frame_id, stamps past 2038 or invalid, an absurd size; 1x4000 and
    4000x1 frames with the debug image on. Each bad frame is counted and its cause logged once;
    the good frame after it is forecast; debug images and Futures stay small."""
    # Reliable input: best effort may lose the 1 MB message before the node sees it (counted as
    # frames_lost_by_dds, but then this test could not count it as malformed).
    harness = harness_factory(reliable_camera=True)
    node = NodeProcess(tmp_path, ros_env, model_config=str(tiny_config), k=3, horizon=2, step_s=0.25,
                       output_size=list(OUTPUT), publish_debug_image=True, diagnostics_period_s=0.5,
                       input_reliability="reliable")
    try:
        harness.wait_until_connected(node)
        assert harness.send_until_forecast(node, 20) >= CONTEXT
        good = smooth_frame()

        def with_header(**fields) -> Image:
            msg = array_to_image_msg(good, "rgb8", harness.next_header())
            for name, value in fields.items():
                setattr(msg.header, name, value)
            return msg

        hostile = [  # (cause, message maker)
            ("frame_id_too_long", lambda: with_header(frame_id="x" * 1_000_000)),
            ("stamp_out_of_range", lambda: with_header(stamp=Time(sec=2**31 - 1, nanosec=600_000_000))),  # +0.5 s: 2038
            ("stamp_out_of_range", lambda: with_header(stamp=Time(sec=5, nanosec=1_500_000_000))),
            ("absurd_size", lambda: Image(header=harness.next_header(), height=1_000_000, width=1_000_000,
                                          encoding="mono8", step=1_000_000, data=bytes(16))),
        ]
        good_forecast = 0
        for _ in range(2):  # twice: each cause is logged once per malformed_log_period_s
            for _cause, make in hostile:
                harness.camera.publish(make())
                time.sleep(0.05)
                assert harness.send_until_forecast(node, 3) == 1, "a good frame after a bad one was not forecast"
                good_forecast += 1
        # Odd but valid shapes: the context restarts (size change), then forecasts come with a
        # debug image whose tiles are bounded whatever the aspect ratio.
        for shape in ((1, 4000), (4000, 1)):
            odd = RNG.integers(0, 256, (*shape, 3), dtype=np.uint8)
            before = len(harness.debug_images)
            assert harness.send_until_forecast(node, CONTEXT + 3, lambda: harness.good(odd)) >= CONTEXT
            harness.wait_for(lambda: len(harness.debug_images) > before, 5, "a debug image", node)
        assert harness.send_until_forecast(node, CONTEXT + 3) >= CONTEXT  # back to the normal camera
        assert harness.send_until_forecast(node, 3) == 1
        time.sleep(1.0)
        values = harness.values()
        assert node.alive(), node.log()
        assert int(values["frames_malformed"]) == 2 * len(hostile), values
        assert good_forecast == 2 * len(hostile)
        log = node.log()
        for cause in {cause for cause, _ in hostile}:
            assert log.count(f"malformed image ({cause})") == 1, log
        assert all(len(f.header.frame_id) <= MAX_FRAME_ID_LENGTH for f in harness.futures)
        assert all(0 <= t.sec < 2**31 - 1 for f in harness.futures for t in f.target_stamps)
        # 5 columns (input + 2 x horizon) x 4 rows (header + 3 samples) of tiles at most 4:1, plus
        # a legend of bounded height (before: 1x4000 frames made a 480,000 px wide picture).
        assert harness.debug_images
        for image in harness.debug_images:
            assert image.width <= 5 * 4 * OUTPUT[0] and image.height <= 4 * OUTPUT[0] + 400, (image.height, image.width)
        assert {s.level for s in harness.statuses()[-1:]} == {DiagnosticStatus.OK}, harness.statuses()[-1]
    finally:
        assert node.stop() == 0, node.log()


# ---------------------------------------------------------------- compressed images
def jpeg_bomb(side: int = 30000) -> bytes:
    """A ~1 KB JPEG whose frame header declares side x side pixels (libjpeg would decode it)."""
    ok, encoded = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
    data = bytearray(encoded.tobytes())
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = side.to_bytes(2, "big") + side.to_bytes(2, "big")
    return bytes(data)


def png_bomb(side: int = 12000) -> bytes:
    """A genuine, valid grey PNG of side x side zeros: ~150 KB that decode to side^2 x 3 bytes."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    compressor, row, parts = zlib.compressobj(9), bytes(side + 1), []  # filter byte + side zeros
    block = row * 256
    for _ in range(side // 256):
        parts.append(compressor.compress(block))
    parts.append(compressor.compress(row * (side % 256)) + compressor.flush())
    ihdr = side.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def test_compressed_bombs_are_rejected_before_decoding(tmp_path, ros_env, harness_factory, tiny_config):
    """Item 1: a 30000^2 JPEG and a 12000^2 PNG (both real, both tiny) cost the node no memory
    and no forecast: the size is read from the header. Other garbage is rejected too."""
    bomb = png_bomb()
    ok = cv2.imdecode(np.frombuffer(bomb, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_8)  # it is a real PNG
    assert ok is not None and ok.shape == (1500, 1500) and len(bomb) < 400_000
    harness = harness_factory(compressed=True)
    node = NodeProcess(tmp_path, ros_env, model_config=str(tiny_config), use_compressed=True, k=3, horizon=2,
                       output_size=list(OUTPUT), diagnostics_period_s=0.5)
    try:
        harness.wait_until_connected(node)
        assert harness.send_until_forecast(node, 20) >= CONTEXT
        baseline_mb = node.peak_rss_mb()
        ok, good_jpeg = cv2.imencode(".jpg", smooth_frame())
        hostile = {
            "absurd_size": [("jpeg", jpeg_bomb()), ("png", bomb)],
            "undecodable": [("jpeg", good_jpeg.tobytes()[:200]),  # truncated: no scan data
                            ("jpeg", RNG.integers(0, 256, 5000, dtype=np.uint8).tobytes()),
                            ("jpeg", cv2.imencode(".bmp", smooth_frame())[1].tobytes())],  # not jpeg/png
        }
        sent = 0
        for fmt, data in [item for items in hostile.values() for item in items]:
            harness.camera.publish(CompressedImage(header=harness.next_header(), format=fmt, data=data))
            sent += 1
            assert harness.send_until_forecast(node, 3, wait=3.0) == 1, "a good frame after a bomb was not forecast"
        time.sleep(1.0)
        values = harness.values()
        assert int(values["frames_malformed"]) == sent, values
        grown = node.peak_rss_mb() - baseline_mb
        assert grown < 100, f"peak memory grew {grown:.0f} MB on bombs"  # a 12000^2 decode alone is 432 MB
        log = node.log()
        for cause in hostile:
            assert log.count(f"malformed image ({cause})") == 1, log
    finally:
        assert node.stop() == 0, node.log()


def test_a_flood_of_legal_32_megapixel_pngs_keeps_memory_and_diagnostics(tmp_path, ros_env, harness_factory,
                                                                          tiny_config):
    """Issue 21 item 8: a ~100 KB PNG declaring 8192x4096 (2^25 px, inside the size limit) is a
    legal frame. Five a second took the node from 312 to 1,088 MB and delayed /diagnostics: the
    full-size frame went to the model, which converts it to float32 (400 MB) before shrinking it.
    Now it is decoded at the size the model needs (1/8: 1024x512)."""
    big = np.zeros((4096, 8192, 3), np.uint8)
    big[::64] = 255  # stripes: a real image, not one colour
    png = cv2.imencode(".png", big)[1].tobytes()
    del big
    assert len(png) < 400_000
    harness = harness_factory(compressed=True)
    node = NodeProcess(tmp_path, ros_env, model_config=str(tiny_config), use_compressed=True, k=2, horizon=1,
                       output_size=list(OUTPUT), diagnostics_period_s=0.25)
    try:
        harness.wait_until_connected(node)
        assert harness.send_until_forecast(node, 20) >= CONTEXT
        before_mb = node.rss_mb()
        received = int(harness.values()["frames_received"])
        mark, start = len(harness.statuses()), time.monotonic()
        sent = 20
        for _ in range(sent):  # 5 a second for 4 s
            harness.camera.publish(CompressedImage(header=harness.next_header(), format="png", data=png))
            time.sleep(0.2)
        flood_s = time.monotonic() - start
        time.sleep(3.0)  # frames still being decoded (0.7 s each: DDS's keep-last queue drops the rest)
        assert int(harness.values()["frames_received"]) - received >= 3, harness.values()
        grown = node.peak_rss_mb() - before_mb
        # One full-size decode is 100 MB (BGR) + 100 MB (RGB) and the model's float32 copy 400 MB more.
        assert grown < 150, f"peak memory grew {grown:.0f} MB under the flood"
        assert int(harness.values()["frames_malformed"]) == 0
        assert harness.send_until_forecast(node, CONTEXT + 5) >= 1, "no forecast after the flood"
        periods = flood_s / 0.25
        assert len(harness.statuses()) - mark >= periods / 2, "diagnostics starved during the flood"
    finally:
        assert node.stop() == 0, node.log()


def test_long_strings_in_messages_are_cut_in_the_log(tmp_path, ros_env, harness_factory, tiny_config):
    """Issue 21 item 9: a 10 MB encoding made a 10 MB log line (frame_id was cut, encoding and
    format were not)."""
    raw = harness_factory(reliable_camera=True)  # a 10 MB message survives only reliable delivery
    node = NodeProcess(tmp_path, ros_env, model_config=str(tiny_config), k=2, horizon=1, output_size=list(OUTPUT),
                       diagnostics_period_s=0.3, malformed_log_period_s=0.0)
    try:
        raw.wait_until_connected(node)
        assert raw.send_until_forecast(node, 20) >= CONTEXT
        long_text = "x" * 10_000_000
        bad = array_to_image_msg(smooth_frame(), "rgb8", raw.next_header())
        bad.encoding = long_text
        raw.camera.publish(bad)
        raw.wait_for(lambda: int(raw.values()["frames_malformed"]) == 1, 30, "the long encoding rejected", node)
        log = node.log()
        assert "unsupported camera encoding 'xxxx" in log and "(10000000 characters)" in log, log[-2000:]
        assert max(len(line) for line in log.splitlines()) < 2000, "a log line carries the whole string"
    finally:
        assert node.stop() == 0, node.log()


# ---------------------------------------------------------------- parameters
BAD_PARAMETERS = [  # (parameter, value, what the one line must say)
    ("diagnostics_period_s", 0.0, "diagnostics_period_s = 0.0: must be a period in seconds"),
    ("diagnostics_period_s", -1.0, "diagnostics_period_s = -1.0: must be a period in seconds"),
    ("malformed_log_period_s", -5.0, "malformed_log_period_s = -5.0"),
    ("stall_timeout_s", 0.0, "stall_timeout_s = 0.0"),
    ("k", -2, "k = -2: must be >= 0"),
    ("k", "many", "parameter k: Trying to set parameter 'k' to 'many' of type 'STRING', expecting type 'INTEGER'"),
    ("step_s", float("nan"), "step_s = nan"),
    ("max_gap_s", -1.0, "max_gap_s = -1.0"),
    ("output_size", [24], "output_size = [24]"),
    ("input_size", [0, 56], "input_size = [0, 56]"),
    ("image_topic", "camera image", "image_topic = 'camera image': not a valid ROS topic name"),
    ("futures_topic", "", "futures_topic = ''"),
    ("debug_image_topic", "/debug/", "debug_image_topic = '/debug/'"),
    ("device", "gpu", "device = 'gpu': must be auto, cpu, mps, cuda or cuda:N"),
    ("model_config", " ", "model_config = ' '"),
    ("input_reliability", "sometimes", "input_reliability = 'sometimes': must be best_available, best_effort or reliable"),
    ("input_depth", 0, "input_depth = 0: must be a history depth from 1 to 100"),
    ("autostart", "yes", "parameter autostart: Trying to set parameter 'autostart' to 'yes'"),
]


def test_bad_parameters_exit_2_with_one_line(tmp_path, ros_env):
    """Item 5: every parameter is validated before anything starts (0 used to spin a core,
    -1 gave a traceback): one line naming the parameter and the rule, exit status 2. The
    nodes start side by side (each exits at once), each on a DDS domain of its own: 18
    participants starting and stopping together on one domain can deadlock inside Fast DDS
    itself (seen 1 in ~12 runs on 2 loaded cores, stuck creating rclpy's parameter services)."""
    runs = []
    base = int(ros_env["ROS_DOMAIN_ID"])
    for i, (param, value, expected) in enumerate(BAD_PARAMETERS):
        params_file = tmp_path / f"params{i}.yaml"
        params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": {param: value}}}))
        env = dict(ros_env, ROS_DOMAIN_ID=str((base + i) % 200 + 1))
        runs.append((param, value, expected, subprocess.Popen(
            [sys.executable, "-m", "deltaworld_ros.forecast_node", "--ros-args", "--params-file", str(params_file)],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
    problems = []
    for param, value, expected, proc in runs:
        try:
            output = proc.communicate(timeout=90)[0].strip()
        except subprocess.TimeoutExpired:
            proc.kill()
            output = proc.communicate()[0].strip() + " [did not exit]"
        if proc.returncode != 2 or "Traceback" in output or len(output.splitlines()) != 1 or expected not in output:
            problems.append(f"{param}={value!r}: exit {proc.returncode}: {output[-500:]}")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------- non-finite depth
def test_non_finite_depth_is_never_published(tmp_path, ros_env, harness_factory, tiny_config):
    """Item 9 (node half): weights that are finite but overflow (3e38) make NaN depth; the node
    withholds those forecasts, counts them and reports ERROR in /diagnostics."""
    from deltaworld_core import load_config
    from deltaworld_core.checkpoint import save_state
    from deltaworld_core.forecaster import WEIGHT_FILES, build_models

    models = build_models(load_config(str(tiny_config)))
    models[2].depth.conv.weight.data.fill_(3e38)
    weights = tmp_path / "overflowing"
    for part, module in zip(WEIGHT_FILES, models):
        save_state(module.state_dict(), weights / WEIGHT_FILES[part])
    harness = harness_factory()
    node = NodeProcess(tmp_path, ros_env, model_config=str(tiny_config), weights=str(weights), k=3, horizon=2,
                       output_size=list(OUTPUT), diagnostics_period_s=0.3)
    try:
        harness.wait_until_connected(node)
        sent = CONTEXT + 4
        for _ in range(sent):
            harness.camera.publish(harness.good())
            time.sleep(0.3)
        harness.wait_for(lambda: harness.statuses() and int(harness.values()["frames_processed"]) == sent, 15,
                         "all frames processed", node)
        time.sleep(0.5)
        values = harness.values()
        assert harness.count() == 0, "a forecast with non-finite depth was published"
        assert int(values["forecasts_nonfinite"]) == sent - CONTEXT + 1, values
        status = harness.statuses()[-1]
        assert status.level == DiagnosticStatus.ERROR and "non-finite" in status.message, status
        assert node.log().count("non-finite depth") == 1, node.log()
    finally:
        assert node.stop() == 0, node.log()


# ---------------------------------------------------------------- two nodes, one name
def test_two_nodes_with_one_name_warn_and_report_apart(tmp_path, ros_env, harness_factory, tiny_config):
    """Item 6: a second node named forecast_node is warned about at start, and the two publish
    distinct diagnostics names."""
    harness = harness_factory()
    nodes = [NodeProcess(tmp_path, ros_env, name=f"node{i}", model_config=str(tiny_config), k=2, horizon=1,
                         output_size=list(OUTPUT), diagnostics_period_s=0.3) for i in range(2)]
    try:
        harness.wait_for(lambda: all("already exists" in n.log() for n in nodes), 60, "both warnings", nodes[0])
        harness.wait_for(lambda: len({s.name for s in harness.statuses()[-6:]}) == 2, 10,
                         "two diagnostics names", nodes[1])
        names = {s.name for s in harness.statuses()[-6:]}
        assert all("forecast_node" in name for name in names), names
        assert {s.hardware_id for s in harness.statuses()} <= {"cpu", "unconfigured"}
        assert all(s.level != DiagnosticStatus.OK for s in harness.statuses()[-4:])  # WARN at least: namesakes
        for n in nodes:
            assert "give each a unique name" in n.log()
    finally:
        for n in nodes:
            assert n.stop() == 0, n.log()


# ---------------------------------------------------------------- input QoS
def test_input_qos_parameters_and_a_12_megapixel_frame(tmp_path, ros_env, harness_factory, tiny_config):
    """Item 4: input_reliability/input_depth set the camera subscription; with reliable QoS
    4000x3000 rgb8 frames (36 MB each) all reach the node and are forecast."""
    harness = harness_factory(reliable_camera=True)
    node = NodeProcess(tmp_path, ros_env, model_config=str(tiny_config), input_reliability="reliable",
                       input_depth=2, k=2, horizon=1, output_size=list(OUTPUT), diagnostics_period_s=0.5)
    try:
        harness.wait_until_connected(node)
        infos = harness.node.get_subscriptions_info_by_topic("/camera/image_raw")
        assert [i.qos_profile.reliability for i in infos] == [ReliabilityPolicy.RELIABLE], infos
        big = cv2.resize(smooth_frame(), (4000, 3000), interpolation=cv2.INTER_NEAREST)
        count = CONTEXT  # the CONTEXT-th frame is the first forecast
        for i in range(count):  # closed loop: keep-last queues may replace frames a loaded node has not taken
            harness.camera.publish(array_to_image_msg(big, "rgb8", harness.next_header()))
            harness.wait_for(lambda: harness.statuses() and int(harness.values()["frames_received"]) == i + 1, 30,
                             f"12 Mpx frame {i + 1} received", node)
        harness.wait_for(lambda: harness.count() >= 1, 20, "a forecast of 12 Mpx frames", node)
        assert int(harness.values()["frames_malformed"]) == 0
        # A best-effort camera cannot feed a reliable subscription: the node says so.
        harness.node.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
        harness.wait_for(lambda: "incompatible with input_reliability 'reliable'" in node.log(), 10,
                         "the incompatible-QoS warning", node)
    finally:
        assert node.stop() == 0, node.log()


# ---------------------------------------------------------------- a stalled model
@pytest.mark.parametrize("stage", ["forecast", "vfm"], ids=["one_stage", "vfm_stage_of_two"])
def test_a_stalled_model_step_is_reported_and_forecasting_resumes(ros_env, ros_node, harness_factory, tiny_config,
                                                                   stage, monkeypatch):
    """Item 2: when the model stops finishing steps (the 1x4000 debug image did that), frames
    wait and /diagnostics says ERROR 'forecasting stalled' instead of OK; when the step returns,
    the next good frame is forecast and the status is OK again. With two stages (threads 2) the
    VFM stage is held instead. Then one call of the stage fails: a model error, counted, ERROR for
    ERROR_WINDOW_S (shortened here), and the node goes on. The node runs in this process (its own
    executor, real DDS) so that a step can be held."""
    from rclpy.parameter import Parameter

    from deltaworld_core.threads import available_cores
    from deltaworld_ros.forecast_node import ForecastNode

    if stage == "vfm" and available_cores() < 2:
        pytest.skip("two stages need two cores")
    monkeypatch.setattr("deltaworld_ros.node_diagnostics.ERROR_WINDOW_S", 2.0)
    config = write_model_config(tiny_config.parent / f"tiny_{stage}.yaml", {**TINY, "forecast.pipeline": stage == "vfm"})
    params = dict(autostart=False, model_config=str(config), k=2, horizon=1, output_size=list(OUTPUT),
                  diagnostics_period_s=0.2, stall_timeout_s=1.0, threads=2 if stage == "vfm" else 1,
                  image_topic="/camera/image_raw", futures_topic="/deltaworld/futures")
    # A namespace of its own per case: the graph may still list the previous case's node for a
    # moment, and a namesake turns the status to WARN
    node = ForecastNode(context=ros_node.context, namespace=f"/{stage}",
                        parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    executor = SingleThreadedExecutor(context=ros_node.context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    harness = harness_factory()
    try:
        node.trigger_configure()
        node.trigger_activate()
        harness.wait_for(lambda: harness.camera.get_subscription_count() > 0, 30, "the node")
        time.sleep(0.3)
        assert harness.send_until_forecast(None, 20) >= CONTEXT
        assert node.runner.stages == (2 if stage == "vfm" else 1)
        release, held = threading.Event(), threading.Event()
        name = "step" if stage == "forecast" else "frame_features"
        call = getattr(node.forecaster, name)

        def held_call(*args):
            held.set()
            release.wait(30)
            return call(*args)

        setattr(node.forecaster, name, held_call)
        harness.camera.publish(harness.good())
        harness.wait_for(held.is_set, 5, "the held step")
        setattr(node.forecaster, name, call)
        for _ in range(12):  # frames keep coming while the step hangs: dropped, not queued
            harness.camera.publish(harness.good())
            time.sleep(0.2)
        stalled = [s for s in harness.statuses() if "stalled" in s.message]
        assert stalled and stalled[-1].level == DiagnosticStatus.ERROR, [s.message for s in harness.statuses()]
        release.set()
        assert harness.send_until_forecast(None, 3) == 1, "no forecast after the stall"
        mark = len(harness.diagnostics)
        harness.wait_for(lambda: any(s.level == DiagnosticStatus.OK for a in harness.diagnostics[mark:]
                                     for s in a.status), 5, "OK after the stall")
        # A failing call of the stage: counted as a model error, ERROR while it is recent, the next
        # frame forecast, and OK again once the error is older than the window
        def failing(*args):
            raise RuntimeError("kernel failed")

        setattr(node.forecaster, name, failing)
        harness.camera.publish(harness.good())
        harness.wait_for(lambda: int(harness.values().get("model_errors", 0)) == 1, 5, "the model error")
        assert any(s.level == DiagnosticStatus.ERROR and s.message.startswith("forecaster errors: 1 in the last")
                   for s in harness.statuses()), [s.message for s in harness.statuses()]
        setattr(node.forecaster, name, call)
        assert harness.send_until_forecast(None, 3) == 1, "no forecast after the failed call"
        mark = len(harness.diagnostics)
        harness.wait_for(lambda: any(s.level == DiagnosticStatus.OK for a in harness.diagnostics[mark:]
                                     for s in a.status), 5, "OK once the error is past")
        assert harness.values()["model_errors"] == "1" and harness.values()["model_errors_recently"] == "0"
    finally:
        release.set() if "release" in locals() else None
        executor.shutdown(timeout_sec=2)
        node.destroy_node()


def test_shipped_parameters_file_sets_every_parameter_to_a_valid_value():
    """config/forecast.yaml documents every declared parameter, and every shipped value and
    default passes the node's validation."""
    from deltaworld_ros.forecast_node import PARAMETERS, parameter_problem

    shipped = yaml.safe_load((REPO / "config" / "forecast.yaml").read_text())["/**"]["ros__parameters"]
    assert set(shipped) == set(PARAMETERS)
    for name, (default, _) in PARAMETERS.items():
        assert parameter_problem(name, default) is None, name
        assert parameter_problem(name, shipped[name]) is None, name
        assert type(shipped[name]) is type(default), name
