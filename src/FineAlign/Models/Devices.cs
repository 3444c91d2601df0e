using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.Models;

/// <summary>
/// Device checks by type and index. TorchSharp's <see cref="Device"/> compares by reference (two "cpu" devices are not
/// equal), so an equality check on devices was always false and rebuilt a table every step (issue #18).
/// </summary>
public static class Devices
{
    public static bool Same(Tensor a, Tensor b) => a.device_type == b.device_type && a.device_index == b.device_index;

    public static bool Same(Tensor t, Device d) => t.device_type == d.type && t.device_index == d.index;
}
