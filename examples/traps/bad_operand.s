; Trap: bad operand. The matrix unit takes bf16, cf8e4, cf8e5 or f32 operands, not i8.
.machine mesh1x1
.section main cores=all
        li      r1, 0x0
        li      r2, 0x100
        li      r3, 0x200
        mma     r3, r1, r2, m=8, n=8, k=8, sd=32, sa=8, sb=8, dt=i8     ; i8 operands: traps
        halt
