; Trap: illegal instruction. The jump goes to instruction 100 of a 3-instruction section.
.machine mesh1x1
.section main cores=all
        li      r1, 1
        jmp     100                                         ; outside the code section: traps
        halt
