using TorchSharp;

namespace FineAlign.Models;

/// <summary>
/// Scalars that live as long as the process. A plain number passed where TorchSharp 0.107 expects a <see cref="Scalar"/>
/// becomes a temporary with a finalizer that nothing keeps alive during the native call (no GC.KeepAlive, not tracked by
/// dispose scopes), so a garbage collection started by another thread can free it mid-call (see docs/RELIABILITY.md).
/// The forward pass, which runs millions of times, uses these instead.
/// </summary>
internal static class LiveScalars
{
    public static readonly Scalar Zero = 0.ToScalar();
    public static readonly Scalar One = 1.ToScalar();
    public static readonly Scalar Two = 2.ToScalar();
}
