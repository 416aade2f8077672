//! Internal coordinates: the bridge between Cartesian positions, where energies live, and the
//! bond/angle/dihedral coordinates flows work in.
//!
//! - [`geometry`]: bonds, angles, dihedrals, atom placement and its reverse-mode derivative;
//! - [`zmatrix`]: the Z-matrix transform with exact log-Jacobian and vector-Jacobian product;
//! - [`normalize`]: reference values and scales; circular dihedrals;
//! - [`transform`]: the two together on batches ([`InternalCoordinates`]);
//! - [`aldp`]: alanine dipeptide as data; [`builder`]: a Z-matrix from a bond graph;
//! - [`cg`]: splitting CG and fine coordinates, linear CG maps of the 2D toys;
//! - [`cg_definition`]: CG dihedrals by atom index or by residue and name (`phi:2`, `backbone`);
//! - [`chirality`]: chiral centres of any molecule and the check that a structure keeps them;
//! - [`align`]: RMSD after optimal superposition;
//! - [`molecule`]: any molecule as data (Z-matrix with its CG dihedrals as rows, circular
//!   dimensions, chiral centres) from its bond graph, masses and a reference structure.

pub mod aldp;
pub mod align;
pub mod builder;
pub mod cg;
pub mod cg_definition;
pub mod chirality;
pub mod geometry;
pub mod molecule;
pub mod normalize;
pub mod transform;
pub mod zmatrix;

pub use normalize::{Normalization, Scales};
pub use transform::{InternalCoordinates, Pullback};
pub use zmatrix::{CoordinateKind, ZMatrix, ZRow};
