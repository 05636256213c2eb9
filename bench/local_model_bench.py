"""The local model and the knowledge base, for docs/benchmarks.md
("Local model and knowledge base"). Standard library only.

    local_model_bench.py RELEASE_DIR OUT_JSON        measure
    local_model_bench.py --update OUT_JSON MD_PATH   write the section

Measures, on the default model file (models/, fetched at set-up):
- bot-runtime end to end (`/v1/chat/completions`, streaming, greedy): time
  to first token and prefill tokens/s for a retrieval-augmented prompt of
  about 500 tokens, decode tokens/s of one stream, aggregate decode tokens/s
  of 4 concurrent streams; model load time (the runtime's own log line);
  peak RSS with the model loaded;
- the same prompt tokens through a plain llama.cpp loop and through candle
  (`local-model-bench`), the reference points;
- knowledge retrieval at 10,000 entries (`knowledge_bench` example);
- the default-model evaluation (bench/model_eval.py) on every candidate.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import benchutil as bu

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / 'models' / 'SmolLM2-135M-Instruct.Q4_1.gguf'
CANDIDATES = [MODEL, ROOT / 'models' / 'gemma-3-270m-q4_k_m.gguf']
EMBEDDINGS = ROOT / 'models' / 'all-MiniLM-L6-v2.Q8_0.gguf'
SECTION = '## Local model and knowledge base'
DECODE = 128
SYSTEM = 'You are a helpful assistant for ClawdBot users. Answer briefly.'
ROUNDS = 3


def faq_context() -> str:
    """About 450 tokens of the shipped FAQ, as the Guide would add them."""
    text = (ROOT / 'examples' / 'knowledge' / 'install.en.md').read_text()
    return ('Answer the user\'s question using the FAQ entries below when they are relevant.\n\n'
            + text[:1900])


QUESTION = 'List the steps to install ClawdBot, then count from 1 to 100 in words, one number per line.'


def chatml(system: str, user: str) -> str:
    # SmolLM2's chat template (ChatML), as llama.cpp applies it.
    return (f'<|im_start|>system\n{system}<|im_end|>\n'
            f'<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n')


def stream(base: str, model: str, system: str, user: str, max_tokens: int) -> dict:
    body = json.dumps({
        'model': model, 'stream': True, 'temperature': 0, 'max_tokens': max_tokens,
        'stream_options': {'include_usage': True},
        'messages': [{'role': 'system', 'content': system}, {'role': 'user', 'content': user}],
    }).encode()
    req = urllib.request.Request(base + '/v1/chat/completions', body, {'content-type': 'application/json'})
    started = time.monotonic()
    first = last = None
    times = []
    usage = {}
    with urllib.request.urlopen(req, timeout=300) as r:
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith('data: ') or line == 'data: [DONE]':
                continue
            chunk = json.loads(line[6:])
            if chunk.get('usage'):
                usage = chunk['usage']
            for c in chunk.get('choices', []):
                if c.get('delta', {}).get('content'):
                    now = time.monotonic()
                    first = first or now
                    last = now
                    times.append(now)
    return {'start': started, 'first': first, 'last': last, 'usage': usage, 'times': times}


def run_runtime(release: Path, reference) -> dict:
    """bot-runtime's figures; `reference()` runs the plain llama.cpp loop,
    called between bot-runtime's rounds so both see the same machine (this
    2-vCPU host's speed drifts by 10-20% over minutes)."""
    work = Path(tempfile.mkdtemp(prefix='local-bench-'))
    port = bu.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(('CLAWDBOT_', 'MODEL_'))}
    env.update(MODEL_BACKEND='local', MODEL_PATH=str(MODEL), CLAWDBOT_LISTEN=f'127.0.0.1:{port}',
               CLAWDBOT_SERVER__DATA_DIR=str(work), CLAWDBOT_SERVER__RATE_LIMIT__REQUESTS_PER_SECOND='0')
    log = work / 'runtime.log'
    with open(log, 'w') as out:
        spawned = time.monotonic()
        proc = subprocess.Popen([str(release / 'bot-runtime')], env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f'http://127.0.0.1:{port}'
    try:
        bu.wait_ready(base, proc, log, timeout=60)
        ready_ms = (time.monotonic() - spawned) * 1000
        name = json.load(urllib.request.urlopen(base + '/v1/models'))['data'][0]['id']
        loaded = [json.loads(l) for l in log.read_text().splitlines() if 'local model loaded' in l]
        load_ms = loaded[0]['load_ms'] if loaded else None
        stream(base, name, SYSTEM, 'Hello', 8)  # warm-up
        singles, refs, rounds = [], [], []
        for _ in range(ROUNDS):
            r = stream(base, name, SYSTEM + '\n\n' + faq_context(), QUESTION, DECODE)
            ttft = r['first'] - r['start']
            n = r['usage']['completion_tokens']
            singles.append({
                'ttft_ms': ttft * 1000,
                'prompt_tokens': r['usage']['prompt_tokens'],
                'prefill_tok_s': r['usage']['prompt_tokens'] / ttft,
                'decode_tok_s': (n - 1) / (r['last'] - r['first']),
                'completion_tokens': n,
            })
            refs.append(reference())
            rounds.append(concurrent(base, name))
        return {
            'ready_ms': ready_ms,
            'load_ms': load_ms,
            'peak_rss_mb': bu.status_kb(proc.pid, 'VmHWM') * 1024 / 1e6,
            'single': {k: statistics.median(s[k] for s in singles) for k in singles[0]},
            'decode_ratios': [s['decode_tok_s'] / r['decode_tok_s'] for s, r in zip(singles, refs)],
            'prefill_ratios': [s['prefill_tok_s'] / r['prefill_tok_s'] for s, r in zip(singles, refs)],
            'reference_rounds': refs,
            'aggregate4_tok_s': statistics.median(a for a, _ in rounds),
            'one_stream_tok_s': statistics.median(o for _, o in rounds),
            'aggregate_ratios': [a / o for a, o in rounds],
        }
    finally:
        bu.stop(proc)


def concurrent(base: str, name: str) -> tuple[float, float]:
    """Aggregate decode tokens/s of 4 concurrent streams, and of one alone.
    The aggregate counts the window in which all four are decoding (from
    the last first token to the first last one): before it the others'
    prompts are still being read, which is prefill, not decode (the plain
    loop's batching ceiling also reads its prompts before its clock starts)."""
    results = []

    def one():
        results.append(stream(base, name, SYSTEM, QUESTION, DECODE))
    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    start, end = max(r['first'] for r in results), min(r['last'] for r in results)
    tokens = sum(1 for r in results for t in r['times'] if start < t <= end)
    one_alone = stream(base, name, SYSTEM, QUESTION, DECODE)
    alone = (one_alone['usage']['completion_tokens'] - 1) / (one_alone['last'] - one_alone['first'])
    return tokens / (end - start), alone


def main() -> None:
    release, out = Path(sys.argv[1]), Path(sys.argv[2])
    prompt = Path(tempfile.mkstemp(suffix='.txt')[1])
    prompt.write_text(chatml(SYSTEM + '\n\n' + faq_context(), QUESTION))
    env = dict(os.environ, RAYON_NUM_THREADS='2')
    bench = [str(release / 'local-model-bench'), str(MODEL), str(prompt), '--threads', '2', '--decode', str(DECODE)]

    def run(*flags: str) -> dict:
        return json.loads(subprocess.run(bench + list(flags), check=True, capture_output=True,
                                         text=True, env=env).stdout)
    # The same cache settings as bot-runtime (8-bit keys and values).
    result = {'runtime': run_runtime(release, lambda: run('--kv-q8', '--no-candle')['llama_cpp'])}
    refs = result['runtime'].pop('reference_rounds')
    # The medians of the interleaved rounds, the batching ceiling and candle
    # from one more run; llama.cpp's default 16-bit cache for the record.
    extra = run('--kv-q8')
    extra['llama_cpp'].update({k: statistics.median(r[k] for r in refs) for k in ('prefill_tok_s', 'decode_tok_s')})
    result['reference'] = extra
    result['reference_f16'] = run('--no-candle')['llama_cpp']
    kb = subprocess.run([str(release / 'examples' / 'knowledge_bench'), str(EMBEDDINGS), '10000'],
                        check=True, capture_output=True, text=True)
    result['knowledge'] = json.loads(kb.stdout.strip().splitlines()[-1])
    models = [str(m) for m in CANDIDATES if m.exists()]
    result['eval'] = subprocess.run([sys.executable, str(ROOT / 'bench' / 'model_eval.py'),
                                     str(release / 'bot-runtime'), *models],
                                    check=True, capture_output=True, text=True).stdout
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


def verdict(ok: bool) -> str:
    return '**PASS**' if ok else '**FAIL**'


def markdown(path: Path) -> str:
    r = json.loads(path.read_text())
    rt, ref, kb = r['runtime'], r['reference'], r['knowledge']
    s, raw, cdl, f16 = rt['single'], ref['llama_cpp'], ref['candle'], r['reference_f16']
    # Each ratio is the median of the rounds' ratios (bot-runtime and the
    # plain loop measured back to back in each round).
    pre_ratio = statistics.median(rt['prefill_ratios'])
    dec_ratio = statistics.median(rt['decode_ratios'])
    agg = statistics.median(rt['aggregate_ratios'])
    rows = [
        ('Prefill tokens/s, bot-runtime end to end vs a raw llama.cpp loop', '≥ 0.9×',
         f"{pre_ratio:.2f}× ({s['prefill_tok_s']:.0f} vs {raw['prefill_tok_s']:.0f})", pre_ratio >= 0.9),
        ('Decode tokens/s, bot-runtime end to end vs a raw llama.cpp loop', '≥ 0.9×',
         f"{dec_ratio:.2f}× ({s['decode_tok_s']:.0f} vs {raw['decode_tok_s']:.0f})", dec_ratio >= 0.9),
        ('Model load time', '≤ 1 s', f"{rt['load_ms']:.0f} ms", rt['load_ms'] <= 1000),
        ('Peak RSS with the model loaded (no knowledge base)', '≤ 350 MB', f"{rt['peak_rss_mb']:.1f} MB",
         rt['peak_rss_mb'] <= 350),
        ('Aggregate decode tokens/s, 4 concurrent streams (while all four decode) vs 1', '≥ 1.5×',
         f"{agg:.2f}× ({rt['aggregate4_tok_s']:.0f} vs {rt['one_stream_tok_s']:.0f})", agg >= 1.5),
        ('Knowledge retrieval p99 at 10,000 entries, English, the index search given the question\'s vector '
         '(BM25, cosine scan over every phrasing, fusion)', '≤ 5 ms',
         f"{kb['search_en_given_vector_p99_ms']:.2f} ms", kb['search_en_given_vector_p99_ms'] <= 5),
        ('Knowledge retrieval p99 at 10,000 entries, Chinese (BM25 over jieba words)', '≤ 5 ms',
         f"{kb['search_zh_p99_ms']:.2f} ms", kb['search_zh_p99_ms'] <= 5),
        ('Knowledge retrieval p99 at 10,000 entries, English end to end: embedding the question '
         '(MiniLM on llama.cpp, one thread) plus the search', '≤ 5 ms',
         f"{kb['search_en_p99_ms']:.2f} ms (the embedding alone: p50 {kb['embed_question_p50_ms']:.2f}, "
         f"p99 {kb['embed_question_p99_ms']:.2f} ms)", kb['search_en_p99_ms'] <= 5),
    ]
    out = [SECTION, '',
           'Generated by `bash bench/local.sh` (also part of `make bench`; `bench/local_model_bench.py`), '
           f"on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(path.stat().st_mtime))}, "
           f"2 CPUs, model `{MODEL.name}`.", '',
           f'Ratios are medians of {ROUNDS} rounds; in each round bot-runtime and the plain llama.cpp loop '
           'run back to back (the rounds: ' + ', '.join(
               f"{n} {' / '.join(f'{x:.2f}' for x in rt[k])}" for n, k in
               (('prefill', 'prefill_ratios'), ('decode', 'decode_ratios'), ('4 streams', 'aggregate_ratios')))
           + ').', '',
           '| Target (issue 17) | Goal | Measured | Result |', '| --- | --- | --- | --- |']
    out += [f'| {a} | {b} | {c} | {verdict(d)} |' for a, b, c, d in rows]
    out += ['',
            f"Time to first token for the {s['prompt_tokens']:.0f}-token retrieval-augmented prompt: "
            f"**{s['ttft_ms']:.0f} ms** (median of {ROUNDS}, greedy, through `/v1/chat/completions` streaming, "
            f"model already warm). Start to ready with the model: {rt['ready_ms']:.0f} ms.", '',
            '| Engine, same file and prompt tokens, 2 threads | load | prefill tok/s | decode tok/s |',
            '| --- | --- | --- | --- |',
            f"| bot-runtime end to end (HTTP, template, batching loop) | {rt['load_ms']:.0f} ms | "
            f"{s['prefill_tok_s']:.0f} | {s['decode_tok_s']:.0f} |",
            f"| llama.cpp, plain loop, 8-bit KV cache like bot-runtime (`local-model-bench --kv-q8`) | {raw['load_ms']:.0f} ms | "
            f"{raw['prefill_tok_s']:.0f} | {raw['decode_tok_s']:.0f} |",
            f"| llama.cpp, plain loop, 16-bit KV cache (its default) | {f16['load_ms']:.0f} ms | "
            f"{f16['prefill_tok_s']:.0f} | {f16['decode_tok_s']:.0f} |"]
    if cdl:
        out.append(f"| candle 0.11 quantized llama (`local-model-bench`, for the record) | {cdl['load_ms']:.0f} ms | "
                   f"{cdl['prefill_tok_s']:.0f} | {cdl['decode_tok_s']:.0f} |")
    out += ['',
            f"Batching ceiling of the hardware: the plain loop decodes {raw['parallel']} short sequences together at "
            f"{raw['aggregate_tok_s']:.0f} tok/s vs {raw['one_short_tok_s']:.0f} for one "
            f"({raw['aggregate_tok_s'] / raw['one_short_tok_s']:.2f}×); bot-runtime's 4 streams also share the 2 CPUs "
            "with the HTTP streams and the benchmark's own client.",
            '',
            f"Knowledge base, {kb['entries']:,} synthetic bilingual entries (`knowledge_bench` example): index "
            f"build {kb['build_s']:.1f} s (BM25 and {'the embeddings of every English phrasing' if kb['dense'] else 'no embeddings'}), "
            f"{kb['rss_after_build_mb']:.0f} MB resident after it (the process, with the embedding model); "
            f"search p50/p99: English {kb['search_en_p50_ms']:.2f}/{kb['search_en_p99_ms']:.2f} ms (includes embedding the "
            f"question; the embedding alone {kb['embed_question_p50_ms']:.2f}/{kb['embed_question_p99_ms']:.2f} ms, the "
            f"search given the vector {kb['search_en_given_vector_p50_ms']:.2f}/{kb['search_en_given_vector_p99_ms']:.2f} ms), "
            f"the same English questions without the embedding model {kb['search_en_lexical_p50_ms']:.2f}/"
            f"{kb['search_en_lexical_p99_ms']:.2f} ms, Chinese (lexical only) {kb['search_zh_p50_ms']:.2f}/{kb['search_zh_p99_ms']:.2f} ms. "
            "The question's embedding costs the same at any number of entries: MiniLM is about 300 MFLOP for a "
            "dozen word pieces, which one core of this machine does in about 4 ms with 8-bit weights (llama.cpp's "
            "AVX2 int8 kernel; 4-bit weights were no faster, and neither was a one-off build with AVX-512 VNNI "
            "kernels, which this CPU has: p50 3.96-3.98 vs 3.98-4.28 ms). It runs on one llama.cpp thread per "
            "question: with two, back-to-back questions take half as long, but questions a millisecond or more "
            "apart, as real ones come, took 9-14 ms at the median (the second thread waits for an idle vCPU to "
            "wake, and the two meet at a barrier after every layer). The index keeps each phrasing's vector in "
            "8 bits (7.7 MB for 20,000 phrasings instead of 31 MB of floats; the scan alone 0.7 ms instead of "
            "1.1 at the median with warm caches). Against the float index, the same `knowledge_bench` run back "
            "to back twice on 2026-12-06: the search given the vector p50/p99 3.41-3.50/4.12-4.19 ms before, "
            "0.87-1.20/1.18-1.61 ms after; the question's embedding also got faster (p50 5.5 to 4.4 ms: the scan "
            "no longer pushes the model's weights out of the cache); resident memory 185 MB before, 169 MB after. "
            "Before this, candle's BERT (F32) took 20-30 ms per question "
            "and BM25 was the `bm25` crate's own `SearchEngine` (p99 4.2 ms English, 7.1 ms Chinese at 10,000 entries).", '',
            '### Choosing the default model', '',
            'Rule and questions: `bench/model_eval.json` (a dozen English and Chinese questions a company bot '
            'gets; an answer scores when it holds one keyword of every group). Run by `bench/model_eval.py` '
            'through bot-runtime itself, greedy.', '', r['eval'].strip(), '']
    return '\n'.join(out)


def update(path: Path, md_path: Path) -> None:
    bu.replace_section(md_path, SECTION, markdown(path))


if __name__ == '__main__':
    if sys.argv[1] == '--update':
        update(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        main()
