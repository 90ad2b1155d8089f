//! Memory bank store and the fused self-matching / top-k aggregation kernel (DESIGN §1
//! steps 4–6, §4). Not built yet: see the issue "The memory bank store and the fused
//! self-matching / top-k aggregation kernel".
