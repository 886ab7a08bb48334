#!/usr/bin/env python3
"""How far cfcost's token estimator is from the emulator's own counts.

When Workers AI reports no usage (or a stream breaks off before its usage
event), cfcost estimates tokens at one per four bytes of text: the prompt's
message contents in, the generated text out (ngx_http_cfcost_settle).  This
runs that estimator over a fixed corpus of requests and compares it with
the usage the emulator reports for the same requests.

The emulator counts one token per word, which real tokenizers do not (they
give about 1.3 tokens per English word), so the figures say how the
estimator behaves on this corpus, not against Cloudflare's billing.

    /usr/bin/python3 emulator/estimator_error.py [N]
"""

import json
import math
import os
import random
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cf_emulator as emu  # noqa: E402

WORDS = ("the a of to and in is it you that he was for on are with as his they"
         " at be this have from or one had by word but not what all were we"
         " when your can said there use an each which she do how their if will"
         " up other about out many then them these so some her would make like"
         " him into time has look two more write go see number no way could"
         " people my than first water been call who oil its now find long down"
         " day did get come made may part gateway latency token stream billing"
         " cloudflare inference quantized instruction multilingual summarize"
         " explain translate kubernetes").split()


def corpus(n, seed=1):
    rng = random.Random(seed)
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 60))]
        yield {"messages": [{"role": "user", "content": " ".join(words)}]}


def estimate(nbytes):
    return math.ceil(nbytes / 4)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    err_in, err_out = [], []
    for body in corpus(n):
        reply = emu.build_reply(body, "@cf/meta/llama-3.1-8b-instruct",
                                emu.Directives(), False)
        prompt = body["messages"][0]["content"].encode()
        # the module counts the text as it stands in the JSON string
        text = json.dumps(reply.text, ensure_ascii=False)[1:-1].encode()
        u = reply.usage
        err_in.append(estimate(len(prompt)) / u["prompt_tokens"] - 1)
        err_out.append(estimate(len(text)) / u["completion_tokens"] - 1)

    for name, e in (("input", err_in), ("output", err_out)):
        print(f"{name:6}: n={len(e)} mean {statistics.mean(e):+.1%}"
              f"  median {statistics.median(e):+.1%}"
              f"  min {min(e):+.1%}  max {max(e):+.1%}")


if __name__ == "__main__":
    main()
