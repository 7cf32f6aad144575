;; Float32 loops in WebAssembly SIMD (see README.md). Every function takes byte addresses in this module's memory,
;; where index.mjs copies the operands a block at a time. The arithmetic is JavaScript's: each element is promoted
;; to float64, the weight is a float64, and the result is rounded to float32 once, when stored (f64x2 lanes), so
;; the results are bit for bit those of the plain loop `sum[i] += weight * values[i]`. Four elements a turn: lanes
;; 0-1 are promoted as they are, lanes 2-3 after a shuffle moves them down, and the two halves are rounded and
;; packed back together. Written out in full, not in helper functions: V8 does not inline those here, and the calls
;; halved the speed.
(module
  ;; Two blocks of 256 KiB (index.mjs BLOCK_ELEMENTS): a sum's and a result's. Fixed, so that views of it stay valid.
  (memory (export "memory") 8 8)

  ;; sum[i] = float32(sum[i] + weight x values[i]) for `count` elements at byte addresses `sum` and `values`.
  (func (export "fold") (param $sum i32) (param $values i32) (param $count i32) (param $weight f64)
    (local $end i32) (local $w v128) (local $s v128) (local $v v128)
    (local.set $w (f64x2.splat (local.get $weight)))
    (local.set $end (i32.add (local.get $sum) (i32.shl (i32.and (local.get $count) (i32.const -4)) (i32.const 2))))
    (block $vectors_done
      (loop $vectors
        (br_if $vectors_done (i32.ge_u (local.get $sum) (local.get $end)))
        (local.set $s (v128.load (local.get $sum)))
        (local.set $v (v128.load (local.get $values)))
        (v128.store (local.get $sum)
          (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
            (f32x4.demote_f64x2_zero
              (f64x2.add
                (f64x2.promote_low_f32x4 (local.get $s))
                (f64x2.mul (local.get $w) (f64x2.promote_low_f32x4 (local.get $v)))))
            (f32x4.demote_f64x2_zero
              (f64x2.add
                (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $s) (local.get $s)))
                (f64x2.mul (local.get $w) (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $v) (local.get $v))))))))
        (local.set $sum (i32.add (local.get $sum) (i32.const 16)))
        (local.set $values (i32.add (local.get $values) (i32.const 16)))
        (br $vectors)))
    (local.set $end (i32.add (local.get $end) (i32.shl (i32.and (local.get $count) (i32.const 3)) (i32.const 2))))
    (block $done
      (loop $elements
        (br_if $done (i32.ge_u (local.get $sum) (local.get $end)))
        (f32.store (local.get $sum)
          (f32.demote_f64
            (f64.add
              (f64.promote_f32 (f32.load (local.get $sum)))
              (f64.mul (local.get $weight) (f64.promote_f32 (f32.load (local.get $values)))))))
        (local.set $sum (i32.add (local.get $sum) (i32.const 4)))
        (local.set $values (i32.add (local.get $values) (i32.const 4)))
        (br $elements))))

  ;; The last fold and the mean in one pass: sum[i] = float32(float32(sum[i] + weight x values[i]) x mean).
  (func (export "foldAveraged") (param $sum i32) (param $values i32) (param $count i32) (param $weight f64) (param $mean f64)
    (local $end i32) (local $w v128) (local $m v128) (local $s v128) (local $v v128) (local $folded v128)
    (local.set $w (f64x2.splat (local.get $weight)))
    (local.set $m (f64x2.splat (local.get $mean)))
    (local.set $end (i32.add (local.get $sum) (i32.shl (i32.and (local.get $count) (i32.const -4)) (i32.const 2))))
    (block $vectors_done
      (loop $vectors
        (br_if $vectors_done (i32.ge_u (local.get $sum) (local.get $end)))
        (local.set $s (v128.load (local.get $sum)))
        (local.set $v (v128.load (local.get $values)))
        ;; float32(sum + weight x values), as fold stores it
        (local.set $folded
          (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
            (f32x4.demote_f64x2_zero
              (f64x2.add
                (f64x2.promote_low_f32x4 (local.get $s))
                (f64x2.mul (local.get $w) (f64x2.promote_low_f32x4 (local.get $v)))))
            (f32x4.demote_f64x2_zero
              (f64x2.add
                (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $s) (local.get $s)))
                (f64x2.mul (local.get $w) (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $v) (local.get $v))))))))
        ;; x mean, rounded to float32 again
        (v128.store (local.get $sum)
          (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
            (f32x4.demote_f64x2_zero (f64x2.mul (local.get $m) (f64x2.promote_low_f32x4 (local.get $folded))))
            (f32x4.demote_f64x2_zero
              (f64x2.mul (local.get $m) (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $folded) (local.get $folded)))))))
        (local.set $sum (i32.add (local.get $sum) (i32.const 16)))
        (local.set $values (i32.add (local.get $values) (i32.const 16)))
        (br $vectors)))
    (local.set $end (i32.add (local.get $end) (i32.shl (i32.and (local.get $count) (i32.const 3)) (i32.const 2))))
    (block $done
      (loop $elements
        (br_if $done (i32.ge_u (local.get $sum) (local.get $end)))
        (f32.store (local.get $sum)
          (f32.demote_f64
            (f64.mul
              (local.get $mean)
              (f64.promote_f32
                (f32.demote_f64
                  (f64.add
                    (f64.promote_f32 (f32.load (local.get $sum)))
                    (f64.mul (local.get $weight) (f64.promote_f32 (f32.load (local.get $values))))))))))
        (local.set $sum (i32.add (local.get $sum) (i32.const 4)))
        (local.set $values (i32.add (local.get $values) (i32.const 4)))
        (br $elements))))

  ;; 1 when none of the `count` float32 elements at byte address `at` is NaN or an infinity (exponent bits all set).
  (func (export "allFinite") (param $at i32) (param $count i32) (result i32)
    (local $end i32) (local $exponent v128) (local $seen v128)
    (local.set $exponent (i32x4.splat (i32.const 0x7f800000)))
    (local.set $end (i32.add (local.get $at) (i32.shl (i32.and (local.get $count) (i32.const -4)) (i32.const 2))))
    (block $vectors_done
      (loop $vectors
        (br_if $vectors_done (i32.ge_u (local.get $at) (local.get $end)))
        (local.set $seen
          (v128.or (local.get $seen) (i32x4.eq (v128.and (v128.load (local.get $at)) (local.get $exponent)) (local.get $exponent))))
        (local.set $at (i32.add (local.get $at) (i32.const 16)))
        (br $vectors)))
    (local.set $end (i32.add (local.get $end) (i32.shl (i32.and (local.get $count) (i32.const 3)) (i32.const 2))))
    (block $done
      (loop $elements
        (br_if $done (i32.ge_u (local.get $at) (local.get $end)))
        (if (i32.eq (i32.and (i32.load (local.get $at)) (i32.const 0x7f800000)) (i32.const 0x7f800000))
          (then (return (i32.const 0))))
        (local.set $at (i32.add (local.get $at) (i32.const 4)))
        (br $elements)))
    (i32.eqz (v128.any_true (local.get $seen))))
)
