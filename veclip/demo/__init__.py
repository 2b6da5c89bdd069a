"""The offline demo: real small datasets (sources), ground-truth descriptive captions measured from the
pixels (describe) and a small real image captioner trained on them (captioner)."""
