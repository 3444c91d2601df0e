using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.Models;

/// <summary>
/// Activation recomputation ("gradient checkpointing", Chen et al. 2016, arXiv 1604.06174): run a function without
/// keeping its intermediates and, in backward, run it again with autograd on and back-propagate through it.
/// Used for each decoder layer (<c>--gradient-checkpointing</c>) and for each chunk of the LM head
/// (<see cref="ChunkedLmHead"/>), so neither the layers' activations nor [positions, vocab] logits stay alive.
/// </summary>
/// <remarks>
/// Reentrant, as PyTorch's <c>checkpoint(use_reentrant=True)</c>: the parameters used inside the function get their
/// gradients accumulated into <c>.grad</c> by the nested backward, so use <c>loss.backward()</c> (not
/// <c>autograd.grad</c>) on a graph that contains it. The global torch RNG is replayed, so dropout inside draws the
/// same mask twice and gradients equal those of the plain function bit for bit (fp32 on CPU).
/// </remarks>
public static class Recompute
{
    /// <summary>
    /// fn(input, captured), recomputed in backward when autograd is on; a plain call otherwise. Every other tensor fn
    /// reads (masks, targets, rotary tables) must come through <paramref name="captured"/>: the caller's dispose scope
    /// ends before backward, so fn receives handles of its own that live until the recomputation is done.
    /// </summary>
    public static Tensor Apply(Func<Tensor, Tensor?[], Tensor> fn, Tensor input, params Tensor?[] captured)
    {
        if (!is_grad_enabled())
        {
            // Without autograd nothing is recomputed, but fn's intermediates (a chunk's [rows, vocab] logits) must still
            // die here, not in the caller's scope: otherwise a no-grad pass over many chunks keeps all of them alive.
            using var plain = NewDisposeScope();
            return fn(input, captured).MoveToOuterDisposeScope();
        }
        // The anchor requires grad, so the node is part of the graph even when the input does not (frozen embeddings
        // under LoRA): otherwise parameters inside fn would silently get no gradient.
        using var anchor = zeros(1, ScalarType.Float32, input.device).requires_grad_(true);
        var own = captured.Select(t => t?.alias().DetachFromDisposeScope()).ToArray();
        return RecomputeFunction.apply(input, anchor, new Holder(fn, own));
    }

    internal sealed class Holder(Func<Tensor, Tensor?[], Tensor> fn, Tensor?[] captured)
    {
        public Func<Tensor, Tensor?[], Tensor> Fn { get; } = fn;
        public Tensor?[] Captured { get; } = captured;
    }

    internal sealed class RecomputeFunction : autograd.SingleTensorFunction<RecomputeFunction>
    {
        public override string Name => "FineAlignRecompute";

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var input = (Tensor)vars[0];
            var holder = (Holder)vars[2];
            ctx.save_for_backward(new List<Tensor> { input });
            ctx.save_data("fn", holder);
            using (var state = get_rng_state()) ctx.save_data("rng", state.data<byte>().ToArray());
            ctx.save_data("requires", input.requires_grad);
            using var scope = NewDisposeScope();
            return holder.Fn(input, holder.Captured).MoveToOuterDisposeScope();
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
        {
            var input = ctx.get_saved_variables()[0];
            var holder = (Holder)ctx.get_data("fn");
            var rng = (byte[])ctx.get_data("rng");
            bool inputNeedsGrad = (bool)ctx.get_data("requires");
            Tensor? gradInput = null;
            using (var scope = NewDisposeScope())
            {
                var after = get_rng_state();
                set_rng_state(tensor(rng, dtype: ScalarType.Byte));
                try
                {
                    using var grad = enable_grad();
                    var x = input.detach().requires_grad_(inputNeedsGrad);
                    var y = holder.Fn(x, holder.Captured);
                    if (y.requires_grad) y.backward(new List<Tensor> { gradOutput });
                    if (inputNeedsGrad && x.grad is Tensor g) gradInput = g.detach().MoveToOuterDisposeScope();
                }
                finally
                {
                    set_rng_state(after);
                }
            }
            input.Dispose();
            foreach (var t in holder.Captured) t?.Dispose();
            return new List<Tensor> { gradInput!, null!, null! };
        }
    }
}
