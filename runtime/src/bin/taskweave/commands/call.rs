//! `taskweave call weighting`: one method call on tensors from files, to
//! cross-check a method against another framework on the same numbers.

use std::io::Write;

use super::{dirs_or_default, runtime};
use crate::args::WeightingArgs;
use crate::output::Failure;

pub fn weighting(args: &WeightingArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let call = taskweave::call::WeightingCall {
        name: &args.name,
        sets: &args.sets,
        grads: &args.grads,
        losses: args.losses.as_deref(),
        seed: args.seed,
        step: args.step,
        out: &args.out,
    };
    taskweave::call::weighting(&runtime(&dirs_or_default(args.plugins.clone())), &call)?;
    writeln!(out, "wrote {}", args.out.display())?;
    Ok(())
}
