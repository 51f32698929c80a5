"""The live runner (a later issue): trades the approved version through ccxt."""
