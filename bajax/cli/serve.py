"""`bajax serve`: a local HTTP server that speaks while the audio LLM generates (bajax.speech.stream).

  bajax serve --lm runs/lm --flow runs/flow [--vocoder runs/vocoder] [--host 127.0.0.1 --port 8765]
  curl -sN -X POST localhost:8765/speak -d '{"text": "Hello there.", "seed": 0}' | \\
      play -t raw -r 24000 -e signed -b 16 -c 1 -

The runs are loaded once; every streaming shape is compiled and one warm-up reply spoken (which compiles the
LM's generation) before the server listens.
  POST /speak   JSON {"text": "...", "seed": 0}: the reply as raw 24 kHz mono 16-bit little-endian PCM
                (Content-Type audio/L16; rate=24000; channels=1), sent with chunked transfer encoding, one
                HTTP chunk per audio chunk as soon as it is synthesised; X-Sample-Rate says the rate.
                A bad request gets 400 with JSON {"error": "..."}.
  GET /health   JSON: the loaded runs, the sample rate, the stream chunk and whether a request is running.
One request speaks at a time (others wait); generation and synthesis run in a worker thread so the server
stays responsive. Each chunk is clipped to [-1, 1] (Griffin-Lim has no fixed output scale). Ctrl-C stops it.
"""

from __future__ import annotations

import os
import sys

from bajax.cli.generate import _formatter, add_generation_flags, add_model_flags, add_stream_flags, request

PCM_TYPE = "audio/L16; rate={rate}; channels=1"


def register(sub) -> None:
    p = sub.add_parser("serve", help="local HTTP server: POST /speak streams the spoken reply as 24 kHz PCM",
                       description=__doc__, formatter_class=_formatter())
    add_model_flags(p)
    add_generation_flags(p)
    add_stream_flags(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8765, help="port to listen on (0: any free port)")
    p.set_defaults(func=run)


def make_app(talker, streamer, *, info: dict):
    """The aiohttp application around a loaded `Talker` and a warmed-up `Streamer`."""
    import asyncio
    import json
    import queue

    from aiohttp import web

    from bajax.speech.stream import stream

    lock = asyncio.Lock()
    rate = streamer.sample_rate

    def bad(message: str):
        return web.json_response({"error": message}, status=400)

    async def health(request):
        return web.json_response({**info, "sample_rate": rate, "stream_chunk": streamer.flow.chunk_codes,
                                  "busy": lock.locked()})

    async def speak(request):
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return bad('the body must be JSON: {"text": "...", "seed": 0}')
        if not isinstance(body, dict):
            return bad('the body must be a JSON object: {"text": "...", "seed": 0}')
        text, seed = body.get("text"), body.get("seed", talker.req.seed)
        if not isinstance(text, str) or not text.strip():
            return bad('"text" is missing or empty: give the words to speak, {"text": "Hello there."}')
        if not isinstance(seed, int) or isinstance(seed, bool):
            return bad(f'"seed" must be an integer, got {seed!r}')
        async with lock:
            loop = asyncio.get_running_loop()
            chunks: queue.Queue = queue.Queue()

            def produce():      # the worker thread: generation (its own thread inside `stream`) + synthesis
                try:
                    for chunk in stream(talker, text=text, seed=seed, streamer=streamer):
                        chunks.put(chunk)
                    chunks.put(None)
                except BaseException as e:
                    chunks.put(e)

            work = loop.run_in_executor(None, produce)
            first = await loop.run_in_executor(None, chunks.get)
            if isinstance(first, BaseException):      # e.g. a prompt error: nothing was sent yet
                await work
                status = 400 if isinstance(first, ValueError) else 500
                return web.json_response({"error": str(first)}, status=status)
            response = web.StreamResponse(headers={"Content-Type": PCM_TYPE.format(rate=rate),
                                                   "X-Sample-Rate": str(rate)})
            response.enable_chunked_encoding()
            await response.prepare(request)
            item = first
            try:
                while item is not None:
                    if isinstance(item, BaseException):   # headers are out: end the stream early
                        print(f"bajax serve: error while speaking: {item}", file=sys.stderr, flush=True)
                        break
                    if len(item.pcm):
                        await response.write(item.int16().astype("<i2").tobytes())
                    item = await loop.run_in_executor(None, chunks.get)
            finally:
                await work        # never start the next request while this one still synthesises
            await response.write_eof()
            return response

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_post("/speak", speak)
    return app


def run(args, overrides) -> int:
    try:
        from aiohttp import web
    except ImportError:
        print("bajax serve: needs aiohttp: pip install -e '.[serve]'", file=sys.stderr)
        return 2
    import time

    from bajax.speech.reply import Talker
    from bajax.speech.stream import Streamer, stream

    req = request(args)
    try:
        talker = Talker(req)
        streamer = Streamer(talker.synth, chunk_codes=req.stream_chunk or None, seed=req.seed)
    except ValueError as e:
        print(f"bajax serve: {e}", file=sys.stderr)
        return 2
    compile_s = streamer.warmup()
    print(f"warmup: compiled {len(streamer.flow.buckets)} flow bucket(s) of {streamer.flow.chunk_codes} code "
          f"frames and 2 vocoder windows in {compile_s:.1f} s", flush=True)
    t0 = time.perf_counter()       # one reply, so that the first request does not wait for the LM's compilation
    for _ in stream(talker, text="Hello.", seed=req.seed, streamer=streamer):
        pass
    print(f"warmup: a first reply (LM compilation included) in {time.perf_counter() - t0:.1f} s", flush=True)
    info = {"lm": req.lm, "flow": req.flow, "tokenizer": talker.synth.tokenizer_run, "vocoder": req.vocoder
            or "griffin-lim"}
    app = make_app(talker, streamer, info=info)

    import asyncio
    import signal
    import threading

    def leave() -> None:
        # Leave now: the LM and synthesis threads hold nothing to save, a loaded host took over 30 s to tear JAX
        # down at interpreter exit, and asyncio.run's own teardown waits for executor threads without a bound.
        print("bajax serve: stopped", flush=True)
        sys.stderr.flush()
        os._exit(0)

    async def main():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):     # Ctrl-C or a supervisor's stop
            loop.add_signal_handler(sig, stop.set)
        runner = web.AppRunner(app)
        await runner.setup()
        # A stop waits at most 5 s for requests in flight (aiohttp's default is 60 s).
        site = web.TCPSite(runner, args.host, args.port, shutdown_timeout=5.0)
        await site.start()
        host, port = runner.addresses[0][:2]
        print(f"bajax serve: listening on http://{host}:{port} (POST /speak, GET /health; Ctrl-C stops)",
              flush=True)
        await stop.wait()
        threading.Timer(30.0, leave).start()           # whatever the clean-up below waits for
        try:
            await asyncio.wait_for(runner.cleanup(), timeout=20.0)
        except TimeoutError:
            print("bajax serve: requests still running after 20 s; leaving without them", file=sys.stderr)
        leave()

    asyncio.run(main())
    return 0
