//! The indexes: per-namespace lexical (blind BM25) index. (Vector segments
//! arrive with the embedders.) Touches LMDB only through `crate::store`.

pub mod lexical;
pub mod segment;
pub mod vector;
