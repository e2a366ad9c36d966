"""Screenshots of TensorBoard's dashboards for docs/guide/tensorboard.md, from a real run.

Trains two short byte-level language models (``full`` and ``sliding_window`` attention) with
``examples/train_lm.py`` so the HParams dashboard has runs to compare, starts ``tensorboard`` on
127.0.0.1 on a free port, and captures the Images (attention maps), Text (generated samples),
HParams and Time Series (loss, tokens/s) dashboards with headless Chromium.

Needs Debian's Chromium (``apt-get install chromium``)::

    python scripts/tensorboard_screenshots.py            # writes docs/images/tensorboard/*.png
    python scripts/tensorboard_screenshots.py --logdir runs/screens --skip-training
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DASHBOARDS = {
    # file name: URL fragment of the TensorBoard dashboard
    "attention_maps": "images",
    "text_samples": "text",
    "hparams": "hparams",
    "scalars": "timeseries",
}
RUNS = {
    "full": ["--attention", "full"],
    "sliding_window": ["--attention", '{"name": "sliding_window", "window": 8}'],
}


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit(
        "No Chromium found. Install Debian's package first: apt-get install -y chromium"
    )


def train_runs(logdir, epochs):
    """Two short LM runs that log attention maps, text samples, hparams and tokens/s."""
    for name, flags in RUNS.items():
        command = [
            sys.executable,
            os.path.join(ROOT, "examples", "train_lm.py"),
            "--seq-len", "24",
            "--d-model", "64",
            "--layers", "2",
            "--epochs", str(epochs),
            "--steps-per-epoch", "60",
            "--max-chars", "60000",
            "--sample-length", "48",
            "--verbose", "2",
            "--logdir", os.path.join(logdir, name),
            *flags,
        ]  # fmt: skip
        print("$", " ".join(command), flush=True)
        subprocess.run(command, check=True)


def wait_for(url, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise SystemExit(f"TensorBoard did not answer at {url} within {timeout} s")


def screenshot(chromium, url, path, width, height, budget_ms):
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--window-size={width},{height}",
            f"--virtual-time-budget={budget_ms}",
            f"--screenshot={path}",
            url,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=180,
    )
    print(f"wrote {path} ({os.path.getsize(path):,} bytes) from {url}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logdir", default=os.path.join(ROOT, "runs", "tensorboard_screens"))
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "images", "tensorboard"))
    parser.add_argument("--epochs", type=int, default=3, help="epochs of each training run")
    parser.add_argument("--skip-training", action="store_true", help="reuse --logdir as it is")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--wait-ms", type=int, default=20000, help="page render budget")
    args = parser.parse_args(argv)

    chromium = find_chromium()
    if not args.skip_training:
        shutil.rmtree(args.logdir, ignore_errors=True)
        train_runs(args.logdir, args.epochs)
    os.makedirs(args.out, exist_ok=True)
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable, "-m", "tensorboard.main",
            "--logdir", args.logdir,
            "--host", "127.0.0.1",
            "--port", str(port),
            "--reload_interval", "0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(f"{base}/data/runs")
        time.sleep(3)  # let the first load of the event files finish
        for name, fragment in DASHBOARDS.items():
            path = os.path.join(args.out, f"{name}.png")
            screenshot(chromium, f"{base}/#{fragment}", path, args.width, args.height, args.wait_ms)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"Screenshots in {args.out}; logs in {args.logdir}")


if __name__ == "__main__":
    main()
