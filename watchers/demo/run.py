def run_demo() -> int:
    return 0
