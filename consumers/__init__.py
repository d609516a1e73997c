"""payrelay workers: the record-payment consumer and the Chargebee client."""
