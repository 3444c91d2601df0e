namespace FineAlign;

/// <summary>
/// Files of a model folder may be symlinks, as in the Hugging Face hub cache, where
/// <c>models--org--name/snapshots/&lt;rev&gt;/config.json</c> links to <c>../../blobs/&lt;sha&gt;</c>. Sizes and
/// reads must use the link's target; a link whose target lies outside the model folder (or, for a snapshot
/// folder, outside its cache repository <c>models--org--name/</c>) is refused, so a crafted folder cannot
/// make FineAlign read arbitrary files.
/// </summary>
public static class LinkedFile
{
    /// <summary>
    /// The real path to read for <paramref name="path"/>: itself when neither it nor a folder above it is a
    /// symlink, else the final target. Throws a one-line error for a broken link or one that leaves the folder.
    /// </summary>
    public static string Resolve(string path)
    {
        string full = Path.GetFullPath(path);
        string real = RealPath(full);
        if (real == full) return full;
        if (!File.Exists(real) && !Directory.Exists(real))
            throw new FineAlignException($"{path}: is a broken symlink (its target {real} does not exist).");
        string folder = Path.GetDirectoryName(full)!;
        string root = AllowedRoot(folder);
        if (!IsInside(real, root))
            throw new FineAlignException(
                $"{path}: is a symlink to {real}, which lies outside {(root == RealPath(folder) ? "the model folder" : "the Hugging Face cache repository " + root)}; refusing to follow it.");
        return real;
    }

    /// <summary>Size in bytes of the file <paramref name="path"/> refers to (the target's size for a symlink).</summary>
    public static long Length(string path) => new FileInfo(Resolve(path)).Length;

    /// <summary>
    /// The folder the targets of <paramref name="folder"/>'s links must stay in: the folder itself, or for a hub
    /// snapshot (<c>…/models--org--name/snapshots/&lt;rev&gt;</c>) the repository folder holding <c>blobs/</c>.
    /// </summary>
    public static string AllowedRoot(string folder)
    {
        // The real path decides, so a folder that is itself a link to a snapshot (./qwen → …/snapshots/abc) counts.
        string real = RealPath(folder).TrimEnd(Path.DirectorySeparatorChar);
        if (SnapshotRepo(real) is string repo) return repo;
        return SnapshotRepo(Path.GetFullPath(folder).TrimEnd(Path.DirectorySeparatorChar)) is string named ? RealPath(named) : real;
    }

    private static string? SnapshotRepo(string folder)
    {
        var snapshots = Path.GetDirectoryName(folder);
        var repo = snapshots is null ? null : Path.GetDirectoryName(snapshots);
        return snapshots is not null && repo is not null && Path.GetFileName(snapshots) == "snapshots"
            && Path.GetFileName(repo) is string name && (name.StartsWith("models--", StringComparison.Ordinal) || name.StartsWith("datasets--", StringComparison.Ordinal))
            ? repo : null;
    }

    private static bool IsInside(string path, string root) =>
        path.StartsWith(root.TrimEnd(Path.DirectorySeparatorChar) + Path.DirectorySeparatorChar, StringComparison.Ordinal);

    /// <summary>The absolute path with every symlink (of the file and of the folders above it) resolved, like realpath(3).</summary>
    public static string RealPath(string path, int depth = 0)
    {
        if (depth > 40) throw new FineAlignException($"{path}: too many levels of symbolic links.");
        string full = Path.GetFullPath(path);
        string root = Path.GetPathRoot(full)!;
        string current = root;
        var parts = full[root.Length..].Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries);
        for (int i = 0; i < parts.Length; i++)
        {
            string next = Path.Combine(current, parts[i]);
            var info = new FileInfo(next);
            if (info.LinkTarget is string target)
            {
                string resolved = Path.IsPathRooted(target) ? target : Path.Combine(current, target);
                next = RealPath(resolved, depth + 1);
            }
            current = next;
        }
        return current;
    }
}
