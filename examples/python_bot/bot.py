#!/usr/bin/env python3
"""An example bot that speaks the ms11-recovery agent protocol (protocol 1).

Standard library only. The runner starts it with its stdin/stdout connected to the
runner; every protocol message is one JSON object per line. See README.md next to this
file and docs/agent-protocol.md.

What it does:
  * says hello, waits for resume;
  * works through the re-runs first (verifying whether their effect already happened),
    then state.task_queue in order;
  * for each task: claims it (task_started with a seq, waits for the ack), works
    (reports progress with state patches), records the effect, sends task_done and
    waits for its ack (resending every --ack-timeout seconds) before the next task;
  * sends heartbeats from a separate thread;
  * answers relog with relog_result, exits 0 on shutdown.

"Working" a task is simulated: it takes --task-seconds and gains experience. The
"game world" is the --effects-file: a task's effect is a line with its id, appended and
fsync'ed when the task is carried out. That is what a re-run verifies before acting.
"""

import argparse
import json
import os
import queue
import sys
import threading
import time

PROTOCOL = 1
BOT_NAME = "example-python-bot"
BOT_VERSION = "1.0.0"


class Shutdown(Exception):
    """The runner asked us to stop (or is gone)."""


class Restart(Exception):
    """A new resume arrived: drop the current plan and start from it."""

    def __init__(self, resume):
        super().__init__("resume")
        self.resume = resume


class Channel:
    """The protocol connection: a reader thread for stdin, a locked writer for stdout."""

    def __init__(self, stdin, stdout):
        self._out = stdout
        self._lock = threading.Lock()
        self.inbox = queue.Queue()
        self.seq = 0
        reader = threading.Thread(target=self._read, args=(stdin,), daemon=True)
        reader.start()

    def _read(self, stdin):
        for raw in stdin:
            line = raw.strip()
            if not line:
                continue
            try:
                message = json.loads(line)
            except ValueError:
                log_stderr(f"ignoring a line from the runner that is not JSON: {line[:200]!r}")
                continue
            if isinstance(message, dict) and isinstance(message.get("type"), str):
                self.inbox.put(message)
        self.inbox.put({"type": "_eof"})

    def send(self, message_type, **fields):
        message = {"type": message_type}
        message.update(fields)
        line = json.dumps(message, separators=(",", ":")) + "\n"
        with self._lock:
            try:
                self._out.write(line)
                self._out.flush()
            except BrokenPipeError:
                raise Shutdown("it closed our stdout")

    def print_output(self, text):
        """Ordinary output (not protocol): the runner logs it as the bot's output."""
        with self._lock:
            self._out.write(text + "\n")
            self._out.flush()

    def next_seq(self):
        self.seq += 1
        return self.seq


class Bot:
    def __init__(self, channel, args):
        self.ch = channel
        self.args = args
        self.state = {}
        self.xp_level = 1
        self.xp_current = 0
        self.xp_next_level = 1000

    # ----- messages from the runner -------------------------------------------------

    def handle_control(self, message):
        """Messages that may arrive at any time. Returns the message if the caller must
        look at it (an ack), raises for resume/shutdown."""
        kind = message["type"]
        if kind == "ack":
            return message
        if kind == "resume":
            raise Restart(message)
        if kind == "shutdown":
            raise Shutdown("shutdown")
        if kind == "_eof":
            raise Shutdown("it closed our stdin")
        if kind == "relog":
            self.relog()
        else:
            # Forward compatibility: unknown types are ignored.
            log_stderr(f"ignoring unknown message type {kind!r}")
        return None

    def wait_for(self, timeout):
        """Next message within `timeout` seconds (None if none), control messages handled."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                message = self.ch.inbox.get(timeout=left)
            except queue.Empty:
                return None
            message = self.handle_control(message)
            if message is not None:
                return message

    def request(self, message_type, **fields):
        """Sends a message with a new seq and waits for its ack, resending it every
        --ack-timeout seconds. The ack means the runner has recorded it durably."""
        seq = self.ch.next_seq()
        while True:
            self.ch.send(message_type, **fields, seq=seq)
            deadline = time.monotonic() + self.args.ack_timeout
            while True:
                message = self.wait_for(max(0.0, deadline - time.monotonic()))
                if message is None:
                    break  # timeout: send again (same seq)
                if message.get("seq") == seq:
                    return
                # An ack of an earlier resend: ignore it.
            self.log("warn", f"no ack for {message_type} seq {seq} after "
                             f"{self.args.ack_timeout} s; sending it again")

    def relog(self):
        time.sleep(self.args.relog_seconds)
        if self.args.relog_fails:
            self.ch.send("relog_result", ok=False, reason="login server refused the character")
        else:
            self.ch.send("relog_result", ok=True)

    # ----- work ---------------------------------------------------------------------

    def run(self):
        self.ch.send("hello", protocol=PROTOCOL, bot=BOT_NAME, version=BOT_VERSION)
        # Heartbeats start after hello: hello is always the first message.
        beats = threading.Thread(target=heartbeat, args=(self.ch, self.args.heartbeat_interval),
                                 daemon=True)
        beats.start()
        resume = self.wait_for_resume()
        while True:
            try:
                self.work(resume)
                resume = self.wait_for_resume()  # idle until something new arrives
            except Restart as restart:
                resume = restart.resume

    def wait_for_resume(self):
        while True:
            try:
                self.wait_for(3600.0)
            except Restart as restart:
                return restart.resume

    def work(self, resume):
        self.state = resume.get("state") or {}
        self.xp_level = int(self.state.get("xp_level", 1))
        self.xp_current = int(self.state.get("xp_current", 0))
        self.xp_next_level = int(self.state.get("xp_next_level", 1000)) or 1000
        names = {t.get("id"): t.get("name", "") for t in self.state.get("tasks", [])}
        rerun = list(resume.get("rerun") or [])
        # task_queue lists the in-flight tasks too: each task runs once in this plan.
        plan = rerun + [t for t in self.state.get("task_queue", []) if t not in rerun]
        self.log("info", f"resumed: {len(plan)} tasks to do, {len(rerun)} of them re-runs")
        for task_id in plan:
            self.run_task(task_id, names.get(task_id, ""), task_id in rerun)
        self.log("info", "task queue empty; waiting")

    def run_task(self, task_id, name, is_rerun):
        # Claim: the runner records the task in flight durably before we act, so a
        # crash from here on always tells the next run that this task may be half done.
        self.request("task_started", id=task_id)
        if is_rerun and self.effect_present(task_id):
            self.log("info", f"re-run of {task_id}: its effect is already there, not repeating it")
        else:
            self.carry_out(task_id, name)
        # Done: we wait for the ack before anything else; only then is it final.
        self.request("task_done", id=task_id)

    def carry_out(self, task_id, name):
        steps = max(1, self.args.patches_per_task)
        for _ in range(steps):
            # Control messages (relog, resume, shutdown) are handled while working.
            self.wait_for(self.args.task_seconds / steps)
            self.gain_xp(self.args.xp_per_task // steps)
        self.record_effect(task_id)
        self.ch.print_output(f"finished {task_id} {name}".rstrip())

    def gain_xp(self, amount):
        self.xp_current += amount
        patch = {"xp_current": self.xp_current}
        while self.xp_current >= self.xp_next_level:
            self.xp_current -= self.xp_next_level
            self.xp_level += 1
            patch = {"xp_level": self.xp_level, "xp_current": self.xp_current}
        self.ch.send("state", patch=patch)

    # ----- the "game world" ---------------------------------------------------------

    def effect_present(self, task_id):
        if not self.args.effects_file or not os.path.exists(self.args.effects_file):
            return False
        with open(self.args.effects_file, encoding="utf-8") as f:
            return task_id in (line.strip() for line in f)

    def record_effect(self, task_id):
        if not self.args.effects_file:
            return
        with open(self.args.effects_file, "a", encoding="utf-8") as f:
            f.write(task_id + "\n")
            f.flush()
            os.fsync(f.fileno())

    def log(self, level, msg):
        self.ch.send("log", level=level, msg=msg)


def heartbeat(channel, interval):
    while True:
        time.sleep(interval)
        try:
            channel.send("heartbeat")
        except Shutdown:
            return


def log_stderr(text):
    print(f"{BOT_NAME}: {text}", file=sys.stderr, flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--heartbeat-interval", type=float, default=5.0,
                        help="seconds between heartbeats (default 5)")
    parser.add_argument("--ack-timeout", type=float, default=5.0,
                        help="resend a message without ack after this many seconds (default 5)")
    parser.add_argument("--task-seconds", type=float, default=2.0,
                        help="how long one simulated task takes (default 2)")
    parser.add_argument("--patches-per-task", type=int, default=2,
                        help="state patches sent while a task runs (default 2)")
    parser.add_argument("--xp-per-task", type=int, default=300,
                        help="experience gained per task (default 300)")
    parser.add_argument("--effects-file", default=None,
                        help="file standing in for the game world: ids of carried-out tasks")
    parser.add_argument("--relog-seconds", type=float, default=0.5,
                        help="how long a simulated relog takes (default 0.5)")
    parser.add_argument("--relog-fails", action="store_true",
                        help="answer every relog with ok=false")
    args = parser.parse_args(argv)

    channel = Channel(sys.stdin, sys.stdout)
    try:
        Bot(channel, args).run()
    except Shutdown as stop:
        if str(stop) == "shutdown":
            return 0
        log_stderr(f"the runner is gone ({stop}); exiting")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
