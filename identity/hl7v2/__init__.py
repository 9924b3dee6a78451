"""HL7 v2 front door: MLLP transport, tokenizer, message mapping, ACK/RSP builders."""
