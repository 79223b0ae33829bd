"""pocketsphinx's phone recogniser, run as a child process by heygem.pipeline.phones.recognise_phones.

pocketsphinx holds the GIL while it decodes (0.5 s per 8 s of speech, minutes for a long one), which would stop
every other thread of the job meanwhile: the video analysis, the frame decoder. In a child process it runs
beside them on the other core. This file imports nothing of heygem (nor numpy), so the child starts in
milliseconds, whatever the working folder.

Protocol: stdin carries one JSON line {"ranges": [[start, stop], ...]} (sample ranges), then 16 kHz mono
signed 16-bit little-endian PCM to the end. For each range, stdout gets one JSON line: a list of
[phone, start_s, end_s], times from the range's start. A parent that goes away ends the child at its next
line (a broken pipe), so a cancelled task costs at most one range of decoding.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from pocketsphinx import Decoder

PHONE_FRAME_S = 0.01  # pocketsphinx reports times in 10 ms frames
SAMPLE_BYTES = 2
PHONE_LM_WEIGHT = 0.5  # how much the phone language model counts against the sound (pocketsphinx's lw)
# Phones whose best state scores this far under the frame's best are dropped (pocketsphinx's pbeam; the
# authors' example uses 1e-20). Each phone kept active costs its Gaussian codebook and its language model
# look-ups every frame: at 1e-9, 14 % less decoding, and the same phones, to the frame, as 1e-20 on the real,
# Festival and Chinese speech measured (docs/benchmarks.md); at 1e-8 and narrower, some phones change.
PHONE_BEAM = 1e-9


def recogniser() -> Decoder:
    """pocketsphinx's phone recogniser, with the models inside its wheel."""
    from pocketsphinx import Decoder, get_model_path

    model = get_model_path()
    # The settings the pocketsphinx authors give for phone recognition, but a lighter phone language model: short
    # closures (a b between two vowels) are heard rather than predicted away. Measured on Festival speech and
    # speech_en_1.wav (25 m/b/p with known times): language weight 2.0 finds 17, 0.5 finds 19, with one more
    # spurious closure and the same vowel classes (45 of 61). No word dictionary (dict=None): phones need none,
    # and pocketsphinx would read its 134 000-word CMU dictionary, 0.1 s of CPU, for nothing.
    return Decoder(hmm=f"{model}/en-us/en-us", allphone=f"{model}/en-us/en-us-phone.lm.bin", lm=None,
                   lw=PHONE_LM_WEIGHT, pip=0.3, beam=1e-20, pbeam=PHONE_BEAM, dict=None, loglevel="FATAL")


def decode(pcm: bytes, ranges: list[tuple[int, int]], output: BinaryIO, decoder: Decoder | None = None) -> None:
    """Writes one JSON line of phones per sample range of `pcm` to `output`."""
    decoder = decoder or recogniser()
    for start, stop in ranges:
        decoder.start_utt()
        decoder.process_raw(pcm[start * SAMPLE_BYTES:stop * SAMPLE_BYTES], full_utt=True)
        decoder.end_utt()
        phones = [[segment.word.upper(), segment.start_frame * PHONE_FRAME_S, (segment.end_frame + 1) * PHONE_FRAME_S]
                  for segment in decoder.seg() if segment.end_frame >= segment.start_frame]
        output.write(json.dumps(phones).encode() + b"\n")
        output.flush()


def main() -> int:
    decoder = recogniser()  # before the speech comes: a parent may start this child while it reads the speech
    header = json.loads(sys.stdin.buffer.readline())
    pcm = sys.stdin.buffer.read()
    try:
        decode(pcm, [(int(start), int(stop)) for start, stop in header["ranges"]], sys.stdout.buffer, decoder)
    except BrokenPipeError:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
