"""Messages per second of identity.hl7v2.tokenizer on one core, for a realistic ADT^A04.

Each iteration parses the raw bytes (charset from MSH-18) and reads MSH-9, MSH-10, every
PID-3 repetition (ID and assigning authority), PID-5 family and given name, PID-7 and PID-8,
which is what the feed front door needs first.

    python benchmarks/bench_tokenizer.py [--seconds 3] [--hl7apy]

``--hl7apy`` also times hl7apy's parser on the same message for comparison.
"""

from __future__ import annotations

import argparse
import time

from identity.hl7v2.tokenizer import parse_message

ADT_A04 = (
    "MSH|^~\\&|REGADT|GOOD HEALTH HOSPITAL^1.2.840.114350.1.13.99998.8734^ISO|IDENTITY|MPI"
    "|20260115083000.123+0100||ADT^A04^ADT_A01|GHH-20260115-000123|P|2.5||||||UNICODE UTF-8\r"
    "EVN|A04|20260115083000|||U1234^Nightingale^Florence^^^^^^GHH&1.2.840.114350&ISO"
    "|20260115082900\r"
    "PID|1||PATID1234^^^GHH&1.2.840.114350.1.13.99998.8734&ISO^MR~"
    "4567890123^^^NHS&2.16.840.1.113883.2.1.4.1&ISO^NH~"
    "A7788990^^^PASSPORT&2.16.840.1.113883.4.330.826&ISO^PPN"
    "||Müller-Lüdenscheidt^Jürgen^Hans-Peter^^Dr.^^L~Mueller^Juergen^^^^^A"
    "|Schäfer^^^^^^M|19610615|M||2106-3^White^CDCREC"
    "|12 Königsallee^Apt 4\\S\\B^Düsseldorf^NW^40212^DE^H~"
    "PO Box 77^^Düsseldorf^NW^40001^DE^M||^PRN^PH^^49^211^5551234~^NET^Internet^jm@example.org"
    "|^WPN^PH^^49^211^5559876|de^German^ISO639|M^Married^HL70002|CAT^Catholic^HL70006"
    "|ACC998877^^^GHH&1.2.840.114350.1.13.99998.8734&ISO^AN|123-45-6789|||N^Not Hispanic^HL70189"
    "|Düsseldorf|N|1\r"
    "PV1|1|O|CLINIC^201^1^GHH||||0148^Addison^James^^^Dr.|0148^Addison^James^^^Dr.||AMB"
    "|||||||0148^Addison^James^^^Dr.|OUT|V00012345^^^GHH&1.2.840.114350&ISO^VN|||||||||||||"
    "||||||||||||20260115083000\r"
).encode()


def read_fields(raw: bytes) -> tuple[object, ...]:
    message = parse_message(raw)
    pid = message.segment("PID")
    assert pid is not None
    identifiers = [
        (repetition.value(1), repetition.value(4, 1), repetition.value(4, 2))
        for repetition in pid.repetitions(3)
    ]
    return (
        message.message_type,
        message.trigger_event,
        message.structure,
        message.control_id,
        identifiers,
        pid.value(5, 1, 1),
        pid.value(5, 1, 2),
        pid.value(7),
        pid.value(8),
    )


def bench(function, seconds: float) -> float:  # type: ignore[no-untyped-def]
    """Messages per second over about ``seconds`` seconds (best of several rounds)."""
    batch = 1000
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        for _ in range(batch):
            function(ADT_A04)
        elapsed = time.perf_counter() - started
        best = max(best, batch / elapsed)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--hl7apy", action="store_true", help="also time hl7apy")
    args = parser.parse_args()

    fields = read_fields(ADT_A04)
    assert fields[0:4] == ("ADT", "A04", "ADT_A01", "GHH-20260115-000123"), fields
    assert fields[5] == "Müller-Lüdenscheidt", fields
    print(f"message: {len(ADT_A04)} bytes, fields read: {fields}")
    rate = bench(read_fields, args.seconds)
    print(f"identity tokenizer: {rate:,.0f} messages/s (one core, parse + field access)")

    if args.hl7apy:
        from hl7apy.parser import parse_message as hl7apy_parse

        text = ADT_A04.decode("utf-8")

        def hl7apy_read(_: bytes) -> object:
            message = hl7apy_parse(text, find_groups=False)
            return message.msh.msh_10.value, message.pid.pid_5.value

        print(f"hl7apy parse_message: {bench(hl7apy_read, args.seconds):,.0f} messages/s")


if __name__ == "__main__":
    main()
