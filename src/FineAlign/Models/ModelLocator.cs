namespace FineAlign.Models;

/// <summary>
/// Finds the Hugging Face model folder a <c>--model</c> value names, for every command: a folder holding
/// config.json, a FineAlign training checkpoint (its <c>model/</c> subfolder), or <c>org/name[@revision]</c>
/// from the local Hugging Face hub cache (never downloaded).
/// </summary>
public static class ModelLocator
{
    /// <summary>
    /// The model folder for <paramref name="model"/>. An existing path is used as a folder (its <c>model/</c>
    /// subfolder for a training checkpoint); otherwise a value shaped like <c>org/name</c> is looked up in the hub
    /// cache. Anything else is a one-line error that says what the folder is or where it looked.
    /// </summary>
    public static string Resolve(string model)
    {
        if (File.Exists(model)) throw new FineAlignException($"{model}: is a file; --model expects a Hugging Face model folder (config.json + model.safetensors).");
        if (!Directory.Exists(model))
        {
            if (LooksLikeRepoId(model)) return FindInHubCache(model);
            throw new FineAlignException($"{model}: model folder not found.");
        }
        if (File.Exists(Path.Combine(model, "config.json"))) return model;
        string inner = Path.Combine(model, "model");
        if (File.Exists(Path.Combine(inner, "config.json"))) return inner;
        if (File.Exists(Path.Combine(model, "trainer_state.json")))
            throw new FineAlignException($"{model}: a FineAlign training checkpoint without a Hugging Face model in its 'model/' subfolder; " +
                                         "it cannot be read as a model (use the run's final output folder instead).");
        bool hasSafetensors = File.Exists(Path.Combine(model, SafeTensors.SingleFileName)) || File.Exists(Path.Combine(model, SafeTensors.IndexFileName));
        if (!hasSafetensors)
            using (SafeTensorsCheckpoint.Open(model)) { }   // throws the pickle-safety or "no weights" message
        return model;                                        // ModelIO.Load reports the missing config.json
    }

    /// <summary>
    /// The folder holding the tokenizer files for <paramref name="model"/>: the folder itself when it has any
    /// (a tokenizer-only folder needs no weights), a checkpoint's <c>model/</c> subfolder, or a hub-cache snapshot.
    /// </summary>
    public static string ResolveTokenizerFolder(string model)
    {
        static bool HasTokenizer(string d) => ModelIO.TokenizerFiles.Any(f => File.Exists(Path.Combine(d, f)));
        if (Directory.Exists(model))
        {
            if (HasTokenizer(model)) return model;
            if (HasTokenizer(Path.Combine(model, "model"))) return Path.Combine(model, "model");
            throw new FineAlignException($"{model}: no tokenizer files (tokenizer.json, tokenizer.model, vocab.json + merges.txt) in this folder.");
        }
        if (File.Exists(model)) throw new FineAlignException($"{model}: is a file; expected a model or tokenizer folder.");
        if (LooksLikeRepoId(model)) return FindInHubCache(model, requireWeights: false);
        throw new FineAlignException($"{model}: folder not found.");
    }

    /// <summary>"org/name" or "org/name@rev": exactly one '/', no path syntax.</summary>
    public static bool LooksLikeRepoId(string s)
    {
        string id = s.Split('@')[0];
        var parts = id.Split('/');
        return parts.Length == 2 && parts.All(p => p.Length > 0 && p is not ("." or "..") && p.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.'))
            && s.Count(c => c == '@') <= 1 && !s.EndsWith('@');
    }

    /// <summary>
    /// The hub cache folders searched, in huggingface_hub's order: <c>$HF_HUB_CACHE</c>, <c>$HF_HOME/hub</c>,
    /// <c>$XDG_CACHE_HOME/huggingface/hub</c>, <c>~/.cache/huggingface/hub</c> (unset variables skipped).
    /// </summary>
    public static IReadOnlyList<string> HubCacheRoots()
    {
        var roots = new List<string>();
        void Add(string? p) { if (!string.IsNullOrEmpty(p) && !roots.Contains(p)) roots.Add(p); }
        Add(Environment.GetEnvironmentVariable("HF_HUB_CACHE"));
        if (Environment.GetEnvironmentVariable("HF_HOME") is { Length: > 0 } home) Add(Path.Combine(home, "hub"));
        if (Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } xdg) Add(Path.Combine(xdg, "huggingface", "hub"));
        string user = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        if (user.Length > 0) Add(Path.Combine(user, ".cache", "huggingface", "hub"));
        return roots;
    }

    /// <summary>
    /// <c>org/name[@rev]</c> in the hub cache: <c>models--org--name/snapshots/&lt;commit&gt;/</c>, the commit read
    /// from <c>refs/&lt;rev&gt;</c> (default <c>main</c>), or <c>rev</c> itself when it is a snapshot's name.
    /// </summary>
    public static string FindInHubCache(string repoId, bool requireWeights = true) => FindInHubCache(repoId, HubCacheRoots(), requireWeights);

    /// <summary><see cref="FindInHubCache(string, bool)"/> searching the given cache roots (tests use a temporary cache).</summary>
    public static string FindInHubCache(string repoId, IReadOnlyList<string> roots, bool requireWeights = true)
    {
        string id = repoId.Split('@')[0];
        string? rev = repoId.Contains('@') ? repoId[(repoId.IndexOf('@') + 1)..] : null;
        string dirName = "models--" + id.Replace("/", "--");
        var looked = new List<string>();
        foreach (string root in roots)
        {
            string repo = Path.Combine(root, dirName);
            looked.Add(repo);
            if (!Directory.Exists(repo)) continue;
            string snapshots = Path.Combine(repo, "snapshots");
            string refName = rev ?? "main";
            string refFile = Path.Combine(repo, "refs", refName);
            string? commit = null;
            if (!refName.Contains('/') && !refName.Contains("..") && File.Exists(refFile))
            {
                commit = File.ReadAllText(refFile).Trim();
                if (commit.Length == 0 || commit.Contains('/') || commit.Contains(".."))
                    throw new FineAlignException($"{refFile}: does not hold a commit hash.");
            }
            else if (rev is not null && Directory.Exists(Path.Combine(snapshots, rev)) && !rev.Contains('/') && !rev.Contains(".."))
                commit = rev;
            else if (rev is null && Directory.Exists(snapshots) && Directory.GetDirectories(snapshots) is { Length: 1 } only)
                commit = Path.GetFileName(only[0]);   // no refs/main (e.g. a copied cache): the one snapshot there is
            if (commit is null)
            {
                var have = Directory.Exists(snapshots) ? Directory.GetDirectories(snapshots).Select(Path.GetFileName).ToList() : [];
                throw new FineAlignException($"{repo}: no revision '{refName}' in the hub cache (refs/{refName} missing; snapshots: " +
                                             $"{(have.Count == 0 ? "none" : string.Join(", ", have))}). Give one as --model {id}@<revision>.");
            }
            string snapshot = Path.Combine(snapshots, commit);
            if (!Directory.Exists(snapshot))
                throw new FineAlignException($"{repo}: refs/{refName} names snapshot {commit}, which is not in snapshots/ (an incomplete download?).");
            return requireWeights ? Resolve(snapshot) : snapshot;
        }
        throw new FineAlignException($"{repoId}: not a model folder, and not in the Hugging Face hub cache (looked in {string.Join(", ", looked)}). " +
                                     "FineAlign does not download models: fetch it first (e.g. `huggingface-cli download " + id + "`) or pass its folder.");
    }
}
