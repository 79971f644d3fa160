; Trap: the max_cycles watchdog. The loop never ends; run it with a small max_cycles
; (tests use 10000; `dojoc run --max-cycles 10000`).
.machine mesh1x1
.section main cores=all
spin:
        addi    r1, r1, 1
        jmp     spin
