using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.Models;

/// <summary>
/// Mixed precision's weight casts (fp32 master → bf16 copy), done once per optimizer step instead of once per use.
/// Outside a <see cref="Step"/> scope <see cref="As"/> is <c>master.to(dtype)</c>, as before. Inside one, the first use of a
/// master casts it and keeps the copy; every later use (the next layer call, each LM-head chunk, its recomputation in
/// backward, every micro-batch) reuses it. The scope is the promise that the masters do not change while it is open: a
/// trainer opens it around the forward and backward passes of one optimizer step and closes it before
/// <c>optimizer.step()</c> (and before any load), which is what invalidates the copies.
/// </summary>
/// <remarks>
/// Gradients reach the fp32 master exactly as through <c>to(dtype)</c>: each use is its own autograd node whose backward
/// is <c>grad.to(master dtype)</c> (what ToCopyBackward does), so per-use gradients are cast to fp32 before they are
/// summed at the master, in the same graph shape as before (bit-identical gradients). The cached copies cost the bf16
/// size of the cast masters while the scope is open; without gradient checkpointing autograd kept those copies alive
/// for backward anyway.
/// </remarks>
public static class MasterCast
{
    [ThreadStatic] private static Cache? _active;

    /// <summary>Opens a cast-once scope for this thread (nested scopes share the outer one).</summary>
    public static IDisposable Step() => _active is null ? _active = new Cache() : NoScope.Instance;

    /// <summary>Whether a cast-once scope is open on this thread.</summary>
    public static bool Active => _active is not null;

    /// <summary>Copies cast so far in the open scope (for tests); 0 without a scope.</summary>
    public static int CachedCount => _active?.Count ?? 0;

    /// <summary><paramref name="master"/> in <paramref name="dtype"/>: itself when it already is, else a (cached) cast.</summary>
    public static Tensor As(Tensor master, ScalarType dtype)
    {
        if (master.dtype == dtype) return master;
        if (_active is not Cache cache) return master.to(dtype);
        var copy = cache.Get(master, dtype);
        return is_grad_enabled() && master.requires_grad ? CastFunction.apply(master, new Holder(copy)) : copy.alias();
    }

    private sealed class Cache : IDisposable
    {
        private readonly Dictionary<(IntPtr, ScalarType), Tensor> _copies = new();
        public int Count => _copies.Count;

        public Tensor Get(Tensor master, ScalarType dtype)
        {
            var key = (master.Handle, dtype);
            if (_copies.TryGetValue(key, out var t)) return t;
            using (no_grad()) t = master.detach().to(dtype).DetachFromDisposeScope();
            _copies[key] = t;
            return t;
        }

        public void Dispose()
        {
            if (ReferenceEquals(_active, this)) _active = null;
            foreach (var t in _copies.Values) t.Dispose();   // aliases handed out keep the storage until autograd drops them
            _copies.Clear();
        }
    }

    private sealed class NoScope : IDisposable
    {
        public static readonly NoScope Instance = new();
        public void Dispose() { }
    }

    // Passed as an object, not a tensor, so autograd does not see the copy as an input the output is a view of.
    private sealed record Holder(Tensor Copy);

    /// <summary>Forward: an alias of the cached copy; backward: the gradient cast to the master's dtype.</summary>
    private sealed class CastFunction : autograd.SingleTensorFunction<CastFunction>
    {
        public override string Name => "FineAlignMasterCast";

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            ctx.save_data("dtype", ((Tensor)vars[0]).dtype);
            return ((Holder)vars[1]).Copy.alias();
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput) =>
            new() { gradOutput.to((ScalarType)ctx.get_data("dtype")), null! };
    }
}
