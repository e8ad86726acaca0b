//! Shape checks of the backend operands, shared by every backend so that each op reports
//! the same error on every device.

use crate::device::{Conv2dSpec, Pool2dSpec, RunningStats};
use crate::error::{shape_err, Error, Result};
use crate::tensor::Tensor;

/// Checks that two tensors have the same shape.
pub(crate) fn same_shape(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(Error::Shape {
            op,
            expected: format!("{:?}", a.shape()),
            found: format!("{:?}", b.shape()),
        });
    }
    Ok(())
}

/// Checks that `x` is 4-D and returns `(n, c, h, w)`.
pub(crate) fn nchw(op: &'static str, x: &Tensor) -> Result<(usize, usize, usize, usize)> {
    match *x.shape() {
        [n, c, h, w] => Ok((n, c, h, w)),
        _ => shape_err(op, "[N, C, H, W]", x.shape()),
    }
}

/// Validates the operands of the fused mixed op (K equal-shape branches, `s0` of one element,
/// `s` of K) and returns `(N, elements per sample)`.
pub(crate) fn mixed_shapes(xs: &[&Tensor], s0: &Tensor, s: &Tensor) -> Result<(usize, usize)> {
    if xs.is_empty() {
        return Err(Error::Invalid("mixed op: no branches".into()));
    }
    if s0.numel() != 1 {
        return shape_err("mixed op s0", "[1]", s0.shape());
    }
    if s.numel() != xs.len() {
        return shape_err("mixed op s", format!("[{}]", xs.len()), s.shape());
    }
    let shape = xs[0].shape();
    for x in xs {
        if x.shape() != shape {
            return shape_err("mixed op branch", format!("{shape:?}"), x.shape());
        }
    }
    let n = shape.first().copied().unwrap_or(1).max(1);
    Ok((n, xs[0].numel() / n))
}

/// Validates `select_columns` operands: `x` of shape `[N, cols]` and column indices below
/// `cols`, each at most once. Returns `(N, cols)`.
pub(crate) fn select_columns(x: &[usize], idx: &[usize]) -> Result<(usize, usize)> {
    let &[n, cols] = x else {
        return select_columns_err(x, idx);
    };
    if idx.iter().any(|&i| i >= cols) {
        return select_columns_err(x, idx);
    }
    let mut seen = vec![false; cols];
    for &i in idx {
        if std::mem::replace(&mut seen[i], true) {
            return Err(Error::Invalid(format!(
                "select_columns: column {i} is selected more than once"
            )));
        }
    }
    Ok((n, cols))
}

fn select_columns_err<T>(x: &[usize], idx: &[usize]) -> Result<T> {
    let max = idx.iter().max().copied().unwrap_or(0);
    shape_err("select_columns", format!("[N, > {max}]"), x)
}

/// Validates `select_columns_backward` operands: `dy` of shape `[N, idx.len()]` and `idx`
/// valid for `[N, cols]` inputs. Returns `N`.
pub(crate) fn select_columns_backward(dy: &[usize], idx: &[usize], cols: usize) -> Result<usize> {
    let m = idx.len();
    let &[n, m2] = dy else {
        return shape_err("select_columns_backward dy", format!("[N, {m}]"), dy);
    };
    if m2 != m {
        return shape_err("select_columns_backward dy", format!("[N, {m}]"), dy);
    }
    select_columns(&[n, cols], idx)?;
    Ok(n)
}

/// `(N, C, S)` of an `[N, C, ...]` tensor (`S`: elements per plane).
pub(crate) fn ncs(op: &'static str, x: &[usize]) -> Result<(usize, usize, usize)> {
    match x {
        [n, c, rest @ ..] => Ok((*n, *c, rest.iter().product())),
        _ => shape_err(op, "[N, C, ...]", x),
    }
}

/// Checks that an optional per-channel vector has shape `[c]`.
pub(crate) fn channel_vec(op: &'static str, t: Option<&Tensor>, c: usize) -> Result<()> {
    match t {
        Some(t) if t.shape() != [c] => shape_err(op, format!("[{c}]"), t.shape()),
        _ => Ok(()),
    }
}

/// Validates the operands of the batch-norm training forward; returns `(N, C, S)`.
pub(crate) fn batch_norm_train(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f32,
) -> Result<(usize, usize, usize)> {
    let (n, c, s) = ncs("batch_norm input", x.shape())?;
    channel_vec("batch_norm weight", weight, c)?;
    channel_vec("batch_norm bias", bias, c)?;
    if !(eps >= 0.0 && eps.is_finite()) {
        return Err(Error::Invalid(format!(
            "batch_norm: eps must be finite and >= 0, got {eps}"
        )));
    }
    if c > 0 && n * s < 2 {
        return Err(Error::Invalid(format!(
            "batch_norm: training needs more than one value per channel, input has shape {:?}",
            x.shape()
        )));
    }
    Ok((n, c, s))
}

/// Validates the operands of the batch-norm backward; returns `(N, C, S)`.
pub(crate) fn batch_norm_backward(
    dy: &Tensor,
    x: &Tensor,
    mean: &Tensor,
    invstd: &Tensor,
    weight: Option<&Tensor>,
) -> Result<(usize, usize, usize)> {
    let (n, c, s) = ncs("batch_norm_backward x", x.shape())?;
    if dy.shape() != x.shape() {
        return shape_err(
            "batch_norm_backward dy",
            format!("{:?}", x.shape()),
            dy.shape(),
        );
    }
    channel_vec("batch_norm_backward mean", Some(mean), c)?;
    channel_vec("batch_norm_backward invstd", Some(invstd), c)?;
    channel_vec("batch_norm_backward weight", weight, c)?;
    if c > 0 && n * s == 0 {
        return Err(Error::Invalid(format!(
            "batch_norm_backward: no values per channel in shape {:?}",
            x.shape()
        )));
    }
    Ok((n, c, s))
}

/// Validates the operands of `channel_affine`; returns `(N, C, S)`.
pub(crate) fn channel_affine(
    x: &Tensor,
    scale: &Tensor,
    shift: Option<&Tensor>,
) -> Result<(usize, usize, usize)> {
    let ncs = ncs("channel_affine input", x.shape())?;
    channel_vec("channel_affine scale", Some(scale), ncs.1)?;
    channel_vec("channel_affine shift", shift, ncs.1)?;
    Ok(ncs)
}

/// Validates the operands of `channel_sums`; returns `(N, C, S)`.
pub(crate) fn channel_sums(x: &Tensor, y: Option<&Tensor>) -> Result<(usize, usize, usize)> {
    let ncs = ncs("channel_sums x", x.shape())?;
    if let Some(y) = y {
        if y.shape() != x.shape() {
            return shape_err("channel_sums y", format!("{:?}", x.shape()), y.shape());
        }
    }
    Ok(ncs)
}

/// Validates the fused mixed op's operands and its seed `dy` (gradient) or `hy` (curvature),
/// named by `what`; returns `(N, elements per sample)`.
pub(crate) fn mixed_seed(
    what: &'static str,
    xs: &[&Tensor],
    s0: &Tensor,
    s: &Tensor,
    seed: &Tensor,
) -> Result<(usize, usize)> {
    let (n, per) = mixed_shapes(xs, s0, s)?;
    if seed.shape() != xs[0].shape() {
        return shape_err(what, format!("{:?}", xs[0].shape()), seed.shape());
    }
    Ok((n, per))
}

/// `(B, K)` of `[B, K]` logits (or probabilities) after checking `labels` against them.
pub(crate) fn rows(op: &'static str, x: &Tensor, labels: Option<&[u32]>) -> Result<(usize, usize)> {
    let (b, k) = match *x.shape() {
        [b, k] => (b, k),
        _ => return shape_err(op, "[B, K] logits", x.shape()),
    };
    if let Some(labels) = labels {
        if labels.len() != b {
            return shape_err(op, format!("{b} labels"), &[labels.len()]);
        }
        if let Some(&bad) = labels.iter().find(|&&l| l as usize >= k) {
            return Err(Error::Invalid(format!(
                "{op}: label {bad} out of range for {k} classes"
            )));
        }
    }
    Ok((b, k))
}

/// A validated convolution: input `[n, c_in, h, w]`, weight `[c_out, c_in / groups, k, k]`,
/// output `[n, c_out, ho, wo]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Conv2dShape {
    pub n: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub k: usize,
    pub ho: usize,
    pub wo: usize,
}

/// Validates a convolution of input shape `x` and weight shape `w` (every size product the
/// kernels form fits in `usize`).
pub(crate) fn conv2d(
    op: &'static str,
    x: &[usize],
    w: &[usize],
    spec: Conv2dSpec,
) -> Result<Conv2dShape> {
    let [n, c_in, h, wd] = *x else {
        return shape_err(op, "input [N, C_in, H, W]", x);
    };
    let [c_out, cig, k, k2] = *w else {
        return shape_err(op, "weight [C_out, C_in / groups, k, k]", w);
    };
    if k != k2 {
        return shape_err(
            op,
            "a square kernel, weight [C_out, C_in / groups, k, k]",
            w,
        );
    }
    let Conv2dSpec {
        stride,
        padding,
        dilation,
        groups,
    } = spec;
    if stride == 0 || dilation == 0 || groups == 0 {
        return Err(Error::Invalid(format!(
            "{op}: stride, dilation and groups must be positive, got {spec:?}"
        )));
    }
    if [n, c_in, h, wd, c_out, k].contains(&0) {
        return Err(Error::Invalid(format!(
            "{op}: empty convolution (input {x:?}, weight {w:?})"
        )));
    }
    if c_in % groups != 0 || c_out % groups != 0 {
        return Err(Error::Invalid(format!(
            "{op}: C_in = {c_in} and C_out = {c_out} must both be divisible by groups = {groups}"
        )));
    }
    if cig != c_in / groups {
        return shape_err(
            op,
            format!(
                "weight [{c_out}, {}, {k}, {k}] (C_in / groups input channels)",
                c_in / groups
            ),
            w,
        );
    }
    let too_large = || Error::Invalid(format!("{op}: sizes overflow (input {x:?}, {spec:?})"));
    let extent = (k - 1)
        .checked_mul(dilation)
        .and_then(|e| e.checked_add(1))
        .ok_or_else(too_large)?;
    let out_size = |len: usize| -> Result<usize> {
        let padded = padding
            .checked_mul(2)
            .and_then(|p| p.checked_add(len))
            .ok_or_else(too_large)?;
        if padded < extent {
            return Err(Error::Invalid(format!(
                "{op}: kernel extent {extent} (k = {k}, dilation = {dilation}) exceeds the padded \
                 input ({len} + 2 * {padding}); the output would be empty (input {x:?})"
            )));
        }
        Ok((padded - extent) / stride + 1)
    };
    let (ho, wo) = (out_size(h)?, out_size(wd)?);
    // Every buffer below is sized from these products; refuse shapes whose sizes overflow.
    let fits = |dims: &[usize]| {
        dims.iter()
            .try_fold(1usize, |a, &b| a.checked_mul(b))
            .is_some()
    };
    let (hp, wp) = (h + 2 * padding, wd + 2 * padding);
    if !(fits(&[n, c_in, h, wd])
        && fits(&[n, c_out, ho, wo])
        && fits(&[c_in / groups, k, k, ho, wo])
        && fits(&[stride, hp, wp]))
    {
        return Err(too_large());
    }
    Ok(Conv2dShape {
        n,
        c_in,
        h,
        w: wd,
        c_out,
        k,
        ho,
        wo,
    })
}

/// Validates the depthwise-then-pointwise pair of `Backend::depthwise_pointwise_forward`:
/// `w_dw` a depthwise filter under `dw_spec` (`groups == C_in == C_out`), `w_pw` a
/// `[C_out, C_in, 1, 1]` pointwise filter over the depthwise output. Returns the two
/// convolutions' shapes.
pub(crate) fn depthwise_pointwise(
    x: &[usize],
    w_dw: &[usize],
    dw_spec: Conv2dSpec,
    w_pw: &[usize],
) -> Result<(Conv2dShape, Conv2dShape)> {
    const OP: &str = "depthwise_pointwise_forward";
    let d = conv2d(OP, x, w_dw, dw_spec)?;
    if !(dw_spec.groups == d.c_in && d.c_out == d.c_in) {
        return Err(Error::Invalid(format!(
            "{OP}: the first convolution must be depthwise (groups = C_in = C_out), got C_in = \
             {}, C_out = {} and {dw_spec:?}",
            d.c_in, d.c_out
        )));
    }
    let p = conv2d(OP, &[d.n, d.c_out, d.ho, d.wo], w_pw, Conv2dSpec::new())?;
    if p.k != 1 {
        return shape_err(
            OP,
            format!("pointwise weight [C_out, {}, 1, 1]", d.c_out),
            w_pw,
        );
    }
    Ok((d, p))
}

/// A validated pooling window over an `[n, c, h, w]` input with output `[n, c, ho, wo]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pool2dShape {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub ho: usize,
    pub wo: usize,
}

/// Validates pooling `spec` over an input of `shape` (every window holds an image element).
pub(crate) fn pool2d(op: &'static str, shape: &[usize], spec: Pool2dSpec) -> Result<Pool2dShape> {
    let &[n, c, h, w] = shape else {
        return shape_err(op, "[N, C, H, W]", shape);
    };
    let (k, s, p) = (spec.kernel, spec.stride, spec.padding);
    if k == 0 || s == 0 {
        return Err(Error::Invalid(format!(
            "{op}: kernel and stride must be positive, got {spec:?}"
        )));
    }
    // As PyTorch: this also guarantees that every window holds an element of the image.
    if 2 * p > k {
        return Err(Error::Invalid(format!(
            "{op}: padding must be at most half the kernel, got {spec:?}"
        )));
    }
    if h == 0 || w == 0 || h + 2 * p < k || w + 2 * p < k {
        return shape_err(op, format!("H, W >= max(1, {k} - 2 * {p})"), shape);
    }
    if h * w > u32::MAX as usize {
        return Err(Error::Invalid(format!(
            "{op}: planes of {h}x{w} are too large"
        )));
    }
    let (ho, wo) = (spec.out_size(h), spec.out_size(w));
    Ok(Pool2dShape { n, c, h, w, ho, wo })
}

/// Max pooling saves argmax offsets as f32: at most 2^24 per plane.
pub(crate) fn max_pool2d_plane(h: usize, w: usize) -> Result<()> {
    if h * w > 1 << 24 {
        return Err(Error::Invalid(format!(
            "max_pool2d: planes of {h}x{w} are too large (argmax offsets are f32, at most 2^24 per plane)"
        )));
    }
    Ok(())
}

/// Validates the operands of `max_pool2d_backward`; returns the input's `[N, C, H, W]`.
pub(crate) fn max_pool2d_backward(
    argmax: &Tensor,
    dy: &Tensor,
    x_shape: &[usize],
) -> Result<[usize; 4]> {
    let &[n, c, h, w] = x_shape else {
        return shape_err("max_pool2d_backward x", "[N, C, H, W]", x_shape);
    };
    let ds = dy.shape();
    if ds.len() != 4 || ds[0] != n || ds[1] != c {
        return shape_err("max_pool2d_backward dy", format!("[{n}, {c}, Ho, Wo]"), ds);
    }
    if argmax.shape() != ds {
        return shape_err(
            "max_pool2d_backward argmax",
            format!("{ds:?}"),
            argmax.shape(),
        );
    }
    if h * w == 0 {
        return shape_err("max_pool2d_backward x", "H, W >= 1", x_shape);
    }
    Ok([n, c, h, w])
}

/// Checks the `dy` of `avg_pool2d_backward` against the output shape `want`.
pub(crate) fn avg_pool2d_dy(dy: &Tensor, want: [usize; 4]) -> Result<()> {
    if dy.shape() != want {
        return shape_err("avg_pool2d_backward dy", format!("{want:?}"), dy.shape());
    }
    Ok(())
}

/// Validates the input of `global_avg_pool`; returns its `[N, C, H, W]`.
pub(crate) fn global_avg_pool(x: &[usize]) -> Result<[usize; 4]> {
    let &[n, c, h, w] = x else {
        return shape_err("global_avg_pool", "[N, C, H, W]", x);
    };
    if h * w == 0 {
        return shape_err("global_avg_pool", "H, W >= 1", x);
    }
    Ok([n, c, h, w])
}

/// Validates the operands of `global_avg_pool_backward`; returns the input's `[N, C, H, W]`.
pub(crate) fn global_avg_pool_backward(dy: &Tensor, x_shape: &[usize]) -> Result<[usize; 4]> {
    let &[n, c, h, w] = x_shape else {
        return shape_err("global_avg_pool_backward x", "[N, C, H, W]", x_shape);
    };
    if h * w == 0 {
        return shape_err("global_avg_pool_backward x", "H, W >= 1", x_shape);
    }
    if dy.shape() != [n, c] {
        return shape_err(
            "global_avg_pool_backward dy",
            format!("[{n}, {c}]"),
            dy.shape(),
        );
    }
    Ok([n, c, h, w])
}

/// Validates the operands of `sgd_momentum`: gradient and momentum of the weight's shape.
pub(crate) fn sgd_momentum(w: &Tensor, g: &Tensor, m: &Tensor) -> Result<()> {
    same_shape("sgd_momentum grad", w, g)?;
    same_shape("sgd_momentum momentum", w, m)
}

/// Validates the inputs of `concat_channels` (NCHW tensors of equal N, H, W); returns
/// `(N, H, W)` and the channel count of each input.
pub(crate) fn concat_channels(xs: &[&Tensor]) -> Result<((usize, usize, usize), Vec<usize>)> {
    if xs.is_empty() {
        return Err(Error::Invalid("concat_channels: no inputs".into()));
    }
    let (n, _, h, w) = nchw("concat_channels", xs[0])?;
    let mut cs = Vec::with_capacity(xs.len());
    for x in xs {
        let (n2, c, h2, w2) = nchw("concat_channels", x)?;
        if (n2, h2, w2) != (n, h, w) {
            return shape_err("concat_channels", format!("[{n}, _, {h}, {w}]"), x.shape());
        }
        cs.push(c);
    }
    Ok(((n, h, w), cs))
}

/// Validates the operands of `split_channels` (an NCHW `y` of `sum(sizes)` channels);
/// returns `y`'s `(N, C, H, W)`.
pub(crate) fn split_channels(y: &Tensor, sizes: &[usize]) -> Result<(usize, usize, usize, usize)> {
    let (n, c, h, w) = nchw("split_channels", y)?;
    if sizes.iter().sum::<usize>() != c {
        return shape_err(
            "split_channels",
            format!("{} channels", sizes.iter().sum::<usize>()),
            y.shape(),
        );
    }
    Ok((n, c, h, w))
}

/// Validates the input of `shift_crop` (NCHW, H and W at least 2); returns its `(N, C, H, W)`.
pub(crate) fn shift_crop(x: &Tensor) -> Result<(usize, usize, usize, usize)> {
    let (n, c, h, w) = nchw("shift_crop", x)?;
    if h < 2 || w < 2 {
        return shape_err("shift_crop", "H >= 2 and W >= 2", x.shape());
    }
    Ok((n, c, h, w))
}

/// Validates the operands of `shift_crop_backward` (`x_shape` one row and one column larger
/// than `dy`); returns the input's `(N, C, H, W)`.
pub(crate) fn shift_crop_backward(
    dy: &Tensor,
    x_shape: &[usize],
) -> Result<(usize, usize, usize, usize)> {
    let (n, c, ho, wo) = nchw("shift_crop_backward", dy)?;
    if x_shape != [n, c, ho + 1, wo + 1] {
        return shape_err(
            "shift_crop_backward",
            format!("x of [{n}, {c}, {}, {}]", ho + 1, wo + 1),
            x_shape,
        );
    }
    Ok((n, c, ho + 1, wo + 1))
}

/// Validates the operands of `scale_samples` (one scale per sample of a non-empty batch);
/// returns `N`.
pub(crate) fn scale_samples(x: &Tensor, scale: &[f32]) -> Result<usize> {
    let n = x.shape().first().copied().unwrap_or(0);
    if scale.len() != n || n == 0 {
        return shape_err(
            "scale_samples",
            format!("[{}, ...] for {} scales", scale.len(), scale.len()),
            x.shape(),
        );
    }
    Ok(n)
}

/// Validates the operands of `mixed_switch_grads`: `r` of shape `[N, K]`, `s0` of one element
/// and `s` of K. Returns `(N, K)`.
pub(crate) fn mixed_switch_grads(r: &Tensor, s0: &Tensor, s: &Tensor) -> Result<(usize, usize)> {
    let &[n, k] = r.shape() else {
        return shape_err("mixed_switch_grads r", "[N, K]", r.shape());
    };
    if s0.numel() != 1 {
        return shape_err("mixed_switch_grads s0", "[1]", s0.shape());
    }
    if s.numel() != k {
        return shape_err("mixed_switch_grads s", format!("[{k}]"), s.shape());
    }
    Ok((n, k))
}

/// Validates the operands of `group_lasso_grad`: one gradient of its value's shape per
/// value, group offsets that start at 0, do not decrease and end at the member count, one
/// coefficient per group, member indices in range and every member in one group only.
pub(crate) fn group_lasso(
    values: &[&Tensor],
    grads: &[&mut Tensor],
    g: &crate::device::LassoGroups,
) -> Result<()> {
    let bad = |what: String| Err(Error::Invalid(format!("group_lasso_grad: {what}")));
    if values.len() != grads.len() {
        return bad(format!(
            "{} values but {} gradients",
            values.len(),
            grads.len()
        ));
    }
    for (v, d) in values.iter().zip(grads) {
        same_shape("group_lasso_grad gradient", v, d)?;
    }
    let members = g.tensor.len();
    if g.elem.len() != members {
        return bad(format!(
            "{members} member tensors but {} elements",
            g.elem.len()
        ));
    }
    if g.start.len() != g.coef.len() + 1 {
        return bad(format!(
            "{} group offsets for {} groups (expected groups + 1)",
            g.start.len(),
            g.coef.len()
        ));
    }
    if g.start[0] != 0
        || g.start.windows(2).any(|w| w[0] > w[1])
        || g.start[g.coef.len()] != members
    {
        return bad(format!(
            "group offsets {:?} do not run from 0 to the {members} members",
            g.start
        ));
    }
    let mut seen = std::collections::HashSet::with_capacity(members);
    for (&t, &e) in g.tensor.iter().zip(&g.elem) {
        if t >= values.len() || e >= values[t].numel() {
            return bad(format!("member (tensor {t}, element {e}) out of range"));
        }
        if !seen.insert((t, e)) {
            return bad(format!("member (tensor {t}, element {e}) in two groups"));
        }
    }
    Ok(())
}

/// Validates the operands of `sgd_momentum_multi`: as many gradients and momenta as
/// weights, each of its weight's shape.
pub(crate) fn sgd_momentum_multi(
    ws: &[&mut Tensor],
    gs: &[&Tensor],
    ms: &[&mut Tensor],
) -> Result<()> {
    if gs.len() != ws.len() || ms.len() != ws.len() {
        return Err(Error::Invalid(format!(
            "sgd_momentum_multi: {} weights, {} gradients, {} momenta",
            ws.len(),
            gs.len(),
            ms.len()
        )));
    }
    for ((w, g), m) in ws.iter().zip(gs).zip(ms) {
        sgd_momentum(w, g, m)?;
    }
    Ok(())
}

/// Validates the operands of `batch_norm_running_update`: four `[C]` vectors.
pub(crate) fn batch_norm_running(
    rm: &Tensor,
    rv: &Tensor,
    mean: &Tensor,
    var: &Tensor,
) -> Result<usize> {
    let c = rm.numel();
    if rm.shape() != [c] {
        return shape_err("batch_norm running mean", "[C]", rm.shape());
    }
    same_shape("batch_norm running var", rm, rv)?;
    same_shape("batch_norm batch mean", rm, mean)?;
    same_shape("batch_norm batch var", rm, var)?;
    Ok(c)
}

/// Validates the running statistics given to a training forward with `c` channels
/// (`batch_norm_train_forward_with`): `[C]` mean and var, momentum in [0, 1].
pub(crate) fn batch_norm_running_of(r: &RunningStats<'_>, c: usize) -> Result<()> {
    channel_vec("batch_norm running mean", Some(&*r.mean), c)?;
    channel_vec("batch_norm running var", Some(&*r.var), c)?;
    if !(0.0..=1.0).contains(&r.momentum) || !r.var_factor.is_finite() {
        return Err(Error::Invalid(format!(
            "batch_norm: running momentum must be in [0, 1] and var_factor finite, got {} and {}",
            r.momentum, r.var_factor
        )));
    }
    Ok(())
}

/// Validates the operands of `batch_norm_curvature`: `hy` of shape `[N, C, ...]`, `[C]`
/// invstd and optional `[C]` weight. Returns `(N, C, S)`.
pub(crate) fn batch_norm_curvature(
    hy: &Tensor,
    invstd: &Tensor,
    weight: Option<&Tensor>,
) -> Result<(usize, usize, usize)> {
    let ncs = ncs("batch_norm_curvature hy", hy.shape())?;
    channel_vec("batch_norm_curvature invstd", Some(invstd), ncs.1)?;
    channel_vec("batch_norm_curvature weight", weight, ncs.1)?;
    Ok(ncs)
}

/// Validates the operands of `batch_norm_eval_constants`: `[C]` running statistics and
/// optional `[C]` weight and bias. Returns `C`.
pub(crate) fn batch_norm_eval(
    rm: &Tensor,
    rv: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
) -> Result<usize> {
    let c = rm.numel();
    if rm.shape() != [c] {
        return shape_err("batch_norm running mean", "[C]", rm.shape());
    }
    same_shape("batch_norm running var", rm, rv)?;
    channel_vec("batch_norm weight", weight, c)?;
    channel_vec("batch_norm bias", bias, c)?;
    Ok(c)
}

/// Validates the operands of `axpy_multi`: as many `ys` as `xs`, pairwise of one shape.
pub(crate) fn axpy_multi(xs: &[&Tensor], ys: &[&mut Tensor]) -> Result<()> {
    if xs.len() != ys.len() {
        return Err(Error::Invalid(format!(
            "axpy_multi: {} inputs for {} outputs",
            xs.len(),
            ys.len()
        )));
    }
    for (x, y) in xs.iter().zip(ys) {
        same_shape("axpy_multi", y, x)?;
    }
    Ok(())
}
