using FineAlign.Text;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace FineAlign.Models;

/// <summary>
/// PPO's value function: a separate value model (LM trunk + 1-output token head, <see cref="ScoredLM"/>) or a
/// linear head on the policy's own final hidden states (shared trunk: cheaper, but value gradients reach the policy).
/// </summary>
public sealed class ValueModel : nn.Module
{
    public const string HeadFile = "value_head.safetensors";

    private readonly ScoredLM? separate;
    private readonly Linear? head;

    private ValueModel(ScoredLM? separate, Linear? head) : base(nameof(ValueModel))
    {
        this.separate = separate; this.head = head;
        RegisterComponents();
    }

    public static ValueModel Separate(ScoredLM model)
    {
        if (model.Kind != HeadKind.Token || model.NumLabels != 1) throw new FineAlignException("a value model needs a 1-output token head");
        return new ValueModel(model, null);
    }

    public static ValueModel Shared(CausalLM policy, long seed)
    {
        var h = nn.Linear(policy.Config.HiddenSize, 1);
        using (no_grad())
        {
            h.weight!.normal_(0, 1.0 / Math.Sqrt(policy.Config.HiddenSize + 1), new torch.Generator((ulong)seed));
            h.bias!.zero_();
        }
        return new ValueModel(null, h);
    }

    public bool IsShared => head is not null;
    public ScoredLM? SeparateModel => separate;

    /// <summary>
    /// The policy's final hidden states [B, L, hidden] and values [B, L] at every position; one trunk pass when shared.
    /// Callers apply the LM head themselves (chunked, only where they need it: <see cref="ChunkedLmHead"/>).
    /// </summary>
    public (Tensor Hidden, Tensor Values) ForwardHidden(CausalLM policy, Tensor ids, Tensor mask)
    {
        if (head is not null)
        {
            var h = policy.ForwardHidden(ids, mask);
            // Mixed precision: the value head stays fp32 (as ScoredLM's heads).
            return (h, head.forward(h.dtype == head.weight!.dtype ? h : h.to(head.weight!.dtype)).squeeze(-1));
        }
        return (policy.ForwardHidden(ids, mask), separate!.TokenScores(ids, mask).squeeze(-1));
    }

    /// <summary>Policy logits and values [B, L] at every position; one trunk pass when shared.</summary>
    public (Tensor Logits, Tensor Values) Forward(CausalLM policy, Tensor ids, Tensor mask)
    {
        if (head is not null)
        {
            var h = policy.ForwardHidden(ids, mask);
            return (policy.LmHead(h), head.forward(h).squeeze(-1));
        }
        return (policy.Forward(ids, mask), separate!.TokenScores(ids, mask).squeeze(-1));
    }

    public void Save(string folder, TextTokenizer tokenizer)
    {
        if (separate is not null) { separate.Save(folder, tokenizer); return; }
        Directory.CreateDirectory(folder);
        SafeTensors.Save(Path.Combine(folder, HeadFile), HeadTensors());
    }

    public void LoadFrom(string folder)
    {
        if (separate is not null) { ScoredLM.LoadInto(separate, folder); return; }
        string path = Path.Combine(folder, HeadFile);
        if (!File.Exists(path)) throw new FineAlignException($"{path}: the shared-trunk value head is missing");
        var tensors = SafeTensors.Load(path, float32);
        try
        {
            using var _ = no_grad();
            foreach (var (name, p) in HeadTensors())
            {
                if (!tensors.TryGetValue(name, out var t) || !t.shape.SequenceEqual(p.shape))
                    throw new FineAlignException($"{path}: tensor '{name}' is missing or has the wrong shape");
                p.copy_(t);
            }
        }
        finally { foreach (var t in tensors.Values) t.Dispose(); }
    }

    private KeyValuePair<string, Tensor>[] HeadTensors() => [new("score.weight", head!.weight!), new("score.bias", head.bias!)];
}
