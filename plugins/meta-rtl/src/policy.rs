//! The source-weighting policy of Meta-RTL: an LSTM cell whose hidden state
//! carries across meta-iterations, reading the previous iteration's weights,
//! rewards and losses (3N numbers), then a linear layer to N logits and a
//! softmax. It learns by policy gradient with its own Adam (not the host's
//! optimizer: the policy is not part of the model).

use taskweave_plugin_api::nn::Linear;
use taskweave_plugin_api::tch::{self, Device, Kind, Tensor};
use taskweave_plugin_api::{Result, State};

/// Adam (Kingma & Ba 2015, as `torch.optim.Adam` with its defaults but the
/// learning rate) over a fixed list of tensors.
struct Adam {
    lr: f64,
    step: u64,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
}

const BETAS: (f64, f64) = (0.9, 0.999);
const EPS: f64 = 1e-8;

impl Adam {
    fn new(lr: f64, params: &[Tensor]) -> Result<Adam> {
        let zeros = |p: &Tensor| p.f_zeros_like();
        Ok(Adam {
            lr,
            step: 0,
            m: params.iter().map(zeros).collect::<Result<_, _>>()?,
            v: params.iter().map(zeros).collect::<Result<_, _>>()?,
        })
    }

    /// One step on the gradients the parameters hold, which it then clears.
    fn step(&mut self, params: &mut [Tensor]) -> Result<()> {
        let _guard = tch::no_grad_guard();
        self.step += 1;
        let (b1, b2) = BETAS;
        let k = self.step as i32;
        for ((p, m), v) in params.iter_mut().zip(&mut self.m).zip(&mut self.v) {
            let g = p.grad();
            if !g.defined() {
                continue;
            }
            *m = m.f_mul_scalar(b1)?.f_add(&g.f_mul_scalar(1.0 - b1)?)?;
            *v = v
                .f_mul_scalar(b2)?
                .f_add(&g.f_square()?.f_mul_scalar(1.0 - b2)?)?;
            let m_hat = m.f_div_scalar(1.0 - b1.powi(k))?;
            let v_hat = v.f_div_scalar(1.0 - b2.powi(k))?;
            let update = m_hat.f_div(&v_hat.f_sqrt()?.f_add_scalar(EPS)?)?;
            let _ = p.f_sub_(&update.f_mul_scalar(self.lr)?)?;
            let _ = g.f_detach()?.f_zero_()?;
        }
        Ok(())
    }
}

/// The LSTM policy over `sources` sources.
pub struct Policy {
    /// `w_ih` `[4H, 3N]`, `w_hh` `[4H, H]`, `b` `[4H]`, then the head's
    /// weight `[N, H]` and bias `[N]`: every trainable tensor, in this order.
    params: Vec<Tensor>,
    hidden: Tensor,
    cell: Tensor,
    adam: Adam,
}

const NAMES: [&str; 5] = ["w_ih", "w_hh", "b", "head.weight", "head.bias"];

impl Policy {
    /// A policy initialised like `torch.nn.LSTMCell` and `torch.nn.Linear`,
    /// drawing from libtorch's generator.
    pub fn new(sources: usize, hidden: usize, lr: f64, device: Device) -> Result<Policy> {
        let (n, h) = (sources as i64, hidden as i64);
        let bound = 1.0 / (hidden as f64).sqrt();
        let uniform = |shape: &[i64]| -> Result<Tensor> {
            let mut t = Tensor::f_empty(shape, (Kind::Float, device))?;
            let _ = t.f_uniform_(-bound, bound)?;
            Ok(t.set_requires_grad(true))
        };
        let head = Linear::new(hidden, sources, device)?;
        let params = vec![
            uniform(&[4 * h, 3 * n])?,
            uniform(&[4 * h, h])?,
            uniform(&[4 * h])?,
            head.weight,
            head.bias,
        ];
        let adam = Adam::new(lr, &params)?;
        Ok(Policy {
            params,
            hidden: Tensor::f_zeros([h], (Kind::Float, device))?,
            cell: Tensor::f_zeros([h], (Kind::Float, device))?,
            adam,
        })
    }

    /// The weights over the sources `[N]` (a softmax, with its graph) for
    /// `input` `[3N]`; advances the LSTM state (kept without a graph).
    pub fn weights(&mut self, input: &Tensor) -> Result<Tensor> {
        let gates = self.params[0]
            .f_mv(input)?
            .f_add(&self.params[1].f_mv(&self.hidden)?)?
            .f_add(&self.params[2])?
            .f_chunk(4, 0)?;
        let (i, f) = (gates[0].f_sigmoid()?, gates[1].f_sigmoid()?);
        let (g, o) = (gates[2].f_tanh()?, gates[3].f_sigmoid()?);
        let cell = f.f_mul(&self.cell)?.f_add(&i.f_mul(&g)?)?;
        let hidden = o.f_mul(&cell.f_tanh()?)?;
        let logits = self.params[3].f_mv(&hidden)?.f_add(&self.params[4])?;
        self.hidden = hidden.f_detach()?;
        self.cell = cell.f_detach()?;
        Ok(logits.f_softmax(0, Kind::Float)?)
    }

    /// One policy-gradient step: minimises −Σ_i w_i Â_i − β_H H(w) over the
    /// sources `chosen` (advantages in their order), H over all of `w`.
    pub fn update(
        &mut self,
        weights: &Tensor,
        chosen: &Tensor,
        advantages: &Tensor,
        entropy_weight: f64,
    ) -> Result<()> {
        let gain = weights
            .f_index_select(0, chosen)?
            .f_mul(advantages)?
            .f_sum(Kind::Float)?;
        let entropy = weights
            .f_mul(&weights.f_clamp_min(1e-12)?.f_log()?)?
            .f_sum(Kind::Float)?
            .f_neg()?;
        let loss = gain
            .f_add(&entropy.f_mul_scalar(entropy_weight)?)?
            .f_neg()?;
        loss.f_backward()?;
        self.adam.step(&mut self.params)
    }

    /// Everything a resumed run needs: parameters, Adam's moments and step,
    /// and the LSTM state.
    pub fn state(&self) -> Result<State> {
        let mut tensors = Vec::new();
        for (name, p) in NAMES.iter().zip(&self.params) {
            tensors.push((name.to_string(), p.f_detach_copy()?));
        }
        for (name, (m, v)) in NAMES.iter().zip(self.adam.m.iter().zip(&self.adam.v)) {
            tensors.push((format!("adam.m.{name}"), m.f_detach_copy()?));
            tensors.push((format!("adam.v.{name}"), v.f_detach_copy()?));
        }
        tensors.push(("hidden".into(), self.hidden.f_detach_copy()?));
        tensors.push(("cell".into(), self.cell.f_detach_copy()?));
        Ok(State {
            tensors,
            meta: taskweave_plugin_api::serde_json::json!({"adam_step": self.adam.step}),
        })
    }

    /// Restores what [`Policy::state`] saved.
    pub fn load_state(&mut self, state: &mut State) -> Result<()> {
        let _guard = tch::no_grad_guard();
        let device = self.hidden.device();
        let mut take =
            |name: &str| -> Result<Tensor> { Ok(state.take_tensor(name)?.f_to_device(device)?) };
        for (name, p) in NAMES.iter().zip(self.params.iter_mut()) {
            p.f_copy_(&take(name)?)?;
        }
        for (i, name) in NAMES.iter().enumerate() {
            self.adam.m[i] = take(&format!("adam.m.{name}"))?;
            self.adam.v[i] = take(&format!("adam.v.{name}"))?;
        }
        self.hidden = take("hidden")?;
        self.cell = take("cell")?;
        self.adam.step = state.meta["adam_step"].as_u64().unwrap_or(0);
        Ok(())
    }
}
