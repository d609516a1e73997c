"""Bank files in (SPEC §9): one parser per format (camt, bai, lockbox, mt94x), their shared model,
and the credits as CloudEvents (events). `formats` names the parsers; `intake` is the one path the
receiver's `/v1/files/{source}` and `payrelay import` share."""
