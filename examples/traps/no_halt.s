; Trap: illegal instruction. The core runs off the end of its code section: every stream needs a halt.
.machine mesh1x1
.section main cores=all
        li      r1, 1
        addi    r1, r1, 1                                   ; ... and then nothing: traps at pc 2
