using System.Security.Cryptography;
using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.Models;

/// <summary>Copying weights between modules by parameter name, without gradient (the one loop every trainer used to write).</summary>
public static class WeightCopy
{
    /// <summary>
    /// Copies every tensor of <paramref name="to"/>'s state dict from the same name in <paramref name="source"/>.
    /// A name <paramref name="skip"/> accepts is left alone; a name missing from the source is an error naming
    /// <paramref name="origin"/> unless <paramref name="allowMissing"/>.
    /// </summary>
    public static void Copy(IReadOnlyDictionary<string, Tensor> source, nn.Module to, string origin,
        Func<string, bool>? skip = null, bool allowMissing = false)
    {
        using var _ = no_grad();
        foreach (var (name, t) in to.state_dict())
        {
            if (skip?.Invoke(name) == true) continue;
            if (source.TryGetValue(name, out var s))
            {
                if (!s.shape.SequenceEqual(t.shape))
                    throw new FineAlignException($"{origin}: tensor '{name}' has shape [{string.Join(", ", s.shape)}], expected [{string.Join(", ", t.shape)}]");
                t.copy_(s);
            }
            else if (!allowMissing) throw new FineAlignException($"{origin}: tensor '{name}' is missing");
        }
    }

    /// <summary>Copies <paramref name="from"/>'s state into <paramref name="to"/> (same architecture).</summary>
    public static void Copy(nn.Module from, nn.Module to, Func<string, bool>? skip = null, bool allowMissing = false) =>
        Copy(from.state_dict(), to, from.GetName(), skip, allowMissing);

    /// <summary>A frozen copy (eval mode, no gradients) of <paramref name="model"/>'s current weights; for a LoRA policy the
    /// base with the adapters off instead (<see cref="Lora.AdapterOff"/>: no second copy of the weights).</summary>
    public static CausalLM FrozenCopy(CausalLM model)
    {
        if (model.Lora is not null) return Lora.AdapterOff(model);
        var copy = ModelFactory.Construct(model.Config, model.parameters().First().dtype);
        Copy(model, copy);
        Freeze(copy);
        return copy;
    }

    /// <summary>Eval mode and requires_grad = false on every parameter.</summary>
    public static void Freeze(nn.Module model)
    {
        foreach (var p in model.parameters()) p.requires_grad = false;
        model.eval();
    }

    /// <summary>
    /// A short hex fingerprint of what a model computes (keys reference-log-prob caches): every tensor's name, shape and
    /// values, and the matmul dtype (<c>--bf16</c> scores differently). For a LoRA reference (<see cref="Lora.AdapterOff"/>,
    /// which owns no tensors) it is the viewed policy's base weights without its adapters, marked as adapter-off: the
    /// key then names the base model, is the same before and after the adapters train (a resumed run keeps its cache),
    /// and differs for another base or for a plain copy of the same weights.
    /// </summary>
    public static string Fingerprint(nn.Module model)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        void Text(string s) => sha.AppendData(System.Text.Encoding.UTF8.GetBytes(s + "\n"));
        var source = model;
        bool adapterOff = false;
        if (model is CausalLM lm)
        {
            if (Lora.ViewedPolicy(lm) is CausalLM policy) { Text("lora-reference: base with the adapters off"); source = policy; lm = policy; adapterOff = true; }
            Text($"compute {lm.ComputeDtype?.ToString() ?? "weights"}");
        }
        foreach (var (name, t) in source.state_dict())
        {
            if (adapterOff && (name.Contains(".lora_A.", StringComparison.Ordinal) || name.Contains(".lora_B.", StringComparison.Ordinal))) continue;
            Text($"{name} [{string.Join(",", t.shape)}]");
            // Tensor by tensor in its own dtype, so the hash never holds more than one tensor's host copy.
            using var f = t.detach().cpu().contiguous();
            sha.AppendData(f.bytes);
        }
        return Convert.ToHexString(sha.GetHashAndReset())[..16].ToLowerInvariant();
    }

}
